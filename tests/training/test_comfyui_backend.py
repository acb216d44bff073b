"""ComfyUI jobs run by the real runner against the loopback ComfyUI fake: both node generations, the
LoRA in both layouts loading in diffusers exactly as ComfyUI applies it, every failure mode, cancel
(running and pending), and re-attach without a second prompt."""

from __future__ import annotations

import io
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.conftest import make_dataset
from tests.fakes.comfyui_server import FakeComfyUI
from training_app import lifecycle
from training_app.backends.registry import backend_for_job
from training_app.models import ArtifactKind, JobStatus, TrainingJob
from training_app.runner import execute_job
from training_app.services import submit_job

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"resolution": 64, "max_steps": 6, "batch_size": 1, "optimizer": "adamw", "lr_scheduler": "constant",
         "rank": 4}


@pytest.fixture
def comfy(tiny_base_model):
    with FakeComfyUI(Path(tiny_base_model.location) / "unet") as server:
        yield server


@pytest.fixture
def backend(team_a, comfy):
    call_command("add_backend", "desk-comfy", "--team", "alpha", "--type", "comfyui", "--base-url", comfy.url,
                 "--option", "checkpoints.tiny-sd15=v1-5-pruned-emaonly.safetensors",
                 "--option", "no_progress_notice_seconds=0.3", stdout=io.StringIO())


def submit(member, dataset, **config) -> TrainingJob:
    return submit_job(member, dataset_id=dataset.uuid, base_model="tiny-sd15", backend="desk-comfy",
                      config={**SMALL, **config})


def logs(job) -> str:
    return "\n".join(job.logs.values_list("line", flat=True))


def run_in_thread(job, worker="w1") -> threading.Thread:
    thread = threading.Thread(target=execute_job, args=(str(job.uuid), worker))
    thread.start()
    return thread


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def exact_delta_check(base_dir: Path, lora_file: Path, raw_file: Path) -> None:
    """The file, loaded and fused by diffusers, changes to_q of the first attention exactly as ComfyUI would:
    W + alpha/rank * up @ down, from the server's own file."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    raw = load_file(str(raw_file))
    module = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    up, down, alpha = raw[f"{module}.lora_up.weight"], raw[f"{module}.lora_down.weight"], raw[f"{module}.alpha"]
    pipe = StableDiffusionPipeline.from_pretrained(str(base_dir), local_files_only=True)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    before = dict(pipe.unet.named_parameters())[name].detach().clone()
    pipe.load_lora_weights(str(lora_file))
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # fused: the plain module holds the adapted weight
    after = dict(pipe.unet.named_parameters())[name]
    assert torch.allclose(after, before + alpha / down.shape[0] * up @ down, atol=1e-6)


def test_a_comfyui_job_completes_with_the_lora_in_both_layouts(member, dataset_a, tiny_base_model, comfy, backend):
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    job.refresh_from_db()
    assert job.step == job.total_steps == 6 and job.remote_id
    files = {a.kind: Path(a.path) for a in job.artifacts.all()}
    assert set(files) == {ArtifactKind.LORA_REMOTE, ArtifactKind.LORA_KOHYA, ArtifactKind.LORA_DIFFUSERS}
    from django.conf import settings

    media = Path(settings.MEDIA_ROOT)
    for kind in (ArtifactKind.LORA_KOHYA, ArtifactKind.LORA_DIFFUSERS):
        exact_delta_check(Path(tiny_base_model.location), media / files[kind], media / files[ArtifactKind.LORA_REMOTE])
    # What the server got: our ids, the job's tags, a job-unique folder of images with their captions.
    (body,) = comfy.prompts_received
    assert body["prompt_id"] == job.remote_id and body["client_id"] == f"lorasite-{job.uuid.hex}"
    tags = body["extra_data"]["extra_pnginfo"]
    assert tags["lorasite_job"] == str(job.uuid) and tags["dataset_sha256"] == job.snapshot_sha256
    assert len(tags["config_sha256"]) == 64
    classes = {node["class_type"] for node in body["prompt"].values()}
    assert classes == {"CheckpointLoaderSimple", "LoadImageTextSetFromFolderNode", "VAEEncode", "TrainLoraNode",
                       "SaveLoRANode"}
    folder = comfy.root / "input" / f"lorasite-{job.uuid.hex}"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:05d}{ext}" for i in range(4) for ext in (".png", ".txt")]
    assert (folder / "00000.txt").read_text().startswith("shp, a square number")
    assert "uploaded 4 images with captions" in logs(job)
    assert "bias/norm deltas" in logs(job)


def test_the_newer_node_generation_trains_too(member, dataset_a, tiny_base_model, comfy, backend):
    comfy.behaviour.generation = "new"
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    (body,) = comfy.prompts_received
    nodes = {node["class_type"]: node["inputs"] for node in body["prompt"].values()}
    assert {"LoadImageTextDataSetFromFolder", "MakeTrainingDataset", "SaveLoRA"} <= set(nodes)
    # Inputs of the 2026 node we do not map get the server's defaults; links follow its output types.
    assert nodes["TrainLoraNode"]["checkpoint_depth"] == 1 and nodes["TrainLoraNode"]["bypass_mode"] is False
    assert nodes["SaveLoRA"]["lora"] == ["4", 0] and nodes["SaveLoRA"]["steps"] == ["4", 2]
    assert TrainingJob.objects.get(pk=job.pk).artifacts.filter(kind=ArtifactKind.LORA_DIFFUSERS).exists()


def test_an_empty_caption_trains_with_the_trigger_word_and_the_log_says_so(member, team_a, tiny_base_model, comfy,
                                                                           backend):
    dataset = make_dataset(team_a, member, name="bare", count=2, captions=False)
    job = submit(member, dataset)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    folder = comfy.root / "input" / f"lorasite-{job.uuid.hex}"
    assert (folder / "00000.txt").read_text() == "shp"
    assert "2 image(s) had no caption; they train with 'shp' as caption" in logs(job)


def test_a_server_without_per_step_progress_is_said_in_the_log(member, dataset_a, comfy, backend):
    comfy.behaviour.per_step_progress = False
    comfy.behaviour.step_seconds = 0.25
    job = submit(member, dataset_a, max_steps=4)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    assert "sends no per-step progress" in logs(job)
    assert TrainingJob.objects.get(pk=job.pk).step == 4


def test_an_execution_error_fails_the_job_naming_node_and_exception(member, dataset_a, comfy, backend):
    comfy.behaviour.fail_at_step = 3
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.FAILED
    job.refresh_from_db()
    assert job.error == ("ComfyUI node 4 (TrainLoraNode) failed: torch.OutOfMemoryError: CUDA out of memory. "
                         "Tried to allocate 2.00 GiB")
    assert not job.artifacts.exists()


def test_a_dropped_socket_falls_back_to_polling_the_history(member, dataset_a, comfy, backend):
    # Slow enough that the run is still going when the worker starts following it.
    comfy.behaviour.step_seconds = 0.3
    comfy.behaviour.drop_socket_at_step = 3
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    assert "websocket closed; following the run by polling its history" in logs(job)
    assert TrainingJob.objects.get(pk=job.pk).artifacts.filter(kind=ArtifactKind.LORA_KOHYA).exists()


def test_a_400_from_prompt_fails_the_job_naming_node_and_input(member, dataset_a, comfy, backend):
    comfy.behaviour.train_limits = {"rank": {"max": 2}}
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.FAILED
    job.refresh_from_db()
    assert job.error == "ComfyUI rejected the workflow: node 4 (TrainLoraNode) input rank: Value 4 bigger than max of 2"


def test_a_500_from_prompt_requeues_the_job_with_a_back_off(member, dataset_a, comfy, backend):
    comfy.behaviour.http_500.add("prompt")
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.QUEUED
    job.refresh_from_db()
    assert "retrying: ComfyUI: the ComfyUI server failed on /prompt (HTTP 500)" in job.error
    assert job.not_before > timezone.now()
    # The next attempt, the server healthy again, submits afresh (the first prompt never reached it).
    comfy.behaviour.http_500.clear()
    TrainingJob.objects.filter(pk=job.pk).update(not_before=None)
    assert execute_job(str(job.uuid), "w2") == JobStatus.COMPLETED
    assert len(comfy.prompts_received) == 1


def test_cancel_interrupts_the_running_prompt(member, dataset_a, comfy, backend):
    comfy.behaviour.step_seconds = 0.2
    job = submit(member, dataset_a, max_steps=200)
    thread = run_in_thread(job)
    wait_for(lambda: comfy.running is not None)
    lifecycle.request_cancel(job.pk)
    thread.join(30)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert comfy.interrupted == {job.remote_id}
    assert comfy.history[job.remote_id]["status"]["status_str"] == "error"


def test_cancel_of_a_pending_prompt_deletes_it_from_the_queue(member, dataset_a, comfy, backend):
    comfy.behaviour.hold = True
    job = submit(member, dataset_a)
    thread = run_in_thread(job)
    wait_for(lambda: len(comfy.pending) == 1)
    lifecycle.request_cancel(job.pk)
    thread.join(30)
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert comfy.pending == [] and comfy.history == {}


def test_a_job_taken_over_by_another_worker_reattaches_without_a_second_prompt(member, dataset_a, comfy, backend):
    comfy.behaviour.step_seconds = 0.1
    job = submit(member, dataset_a, max_steps=30)
    first = run_in_thread(job, "w1")
    wait_for(lambda: comfy.running is not None)
    # The reaper decides w1 is lost (as it would after a stale heartbeat) and re-queues the job.
    assert lifecycle.requeue_lost(job.pk, timezone.now() + timedelta(hours=1), max_attempts=3) == JobStatus.QUEUED
    first.join(30)
    assert not comfy.interrupted  # w1 left the remote run alone
    assert execute_job(str(job.uuid), "w2") == JobStatus.COMPLETED
    assert len(comfy.prompts_received) == 1
    job.refresh_from_db()
    assert f"re-attached to the comfyui run {job.remote_id} (running)" in logs(job)


def test_a_run_whose_id_was_never_stored_is_found_by_its_job_tag(member, dataset_a, comfy, backend):
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    job.refresh_from_db()
    prompt_id = job.remote_id
    job.remote_id = ""
    found = backend_for_job(job).find_run(job, None)
    assert found.remote_id == prompt_id and found.state == "succeeded"
