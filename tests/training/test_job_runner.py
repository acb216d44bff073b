"""A job runs end to end in this process on the tiny model: real trainer, real files, real rows."""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer

from training_app import lifecycle
from training_app.models import ArtifactKind, JobStatus, TrainingJob
from training_app.runner import execute_job
from training_app.services import submit_job

pytestmark = pytest.mark.django_db(transaction=True)

TINY = {"resolution": 64, "max_steps": 8, "batch_size": 2, "rank": 4, "learning_rate": 3e-3,
        "save_every_n_steps": 4, "sample_every_n_steps": 8, "sample_prompts": ["shp, a square"]}


def test_job_completes_with_both_lora_layouts_loss_points_and_a_sample(member, dataset_a, tiny_base_model):
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config=TINY)
    assert execute_job(str(job.uuid), worker_id="test-worker") == JobStatus.COMPLETED
    job.refresh_from_db()
    assert (job.step, job.total_steps, job.percent) == (8, 8, 100.0)
    assert job.loss is not None and job.avg_loss is not None and job.finished_at is not None
    assert list(job.loss_points.values_list("step", flat=True)) == list(range(1, 9))
    kinds = set(job.artifacts.values_list("kind", flat=True))
    assert {ArtifactKind.LORA_KOHYA, ArtifactKind.LORA_DIFFUSERS, ArtifactKind.CHECKPOINT, ArtifactKind.SAMPLE} <= kinds
    assert job.artifacts.get(kind=ArtifactKind.SAMPLE).prompt == "shp, a square"
    kohya = job.artifacts.get(kind=ArtifactKind.LORA_KOHYA)
    assert kohya.size_bytes > 0 and len(kohya.sha256) == 64
    from django.conf import settings
    from safetensors import safe_open

    with safe_open(str(settings.MEDIA_ROOT / kohya.path), "pt") as handle:
        meta = handle.metadata()
    assert meta["lorasite_job_id"] == str(job.uuid) and meta["lorasite_dataset_sha256"] == job.snapshot_sha256
    assert meta["ss_network_dim"] == "4"


def test_second_delivery_does_nothing(member, dataset_a, tiny_base_model):
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={**TINY, "max_steps": 2,
                                                                                        "sample_every_n_steps": 0})
    assert execute_job(str(job.uuid)) == JobStatus.COMPLETED
    assert execute_job(str(job.uuid)) is None
    assert TrainingJob.objects.get(pk=job.pk).attempts == 1


def test_a_broken_base_model_fails_the_job_with_a_clear_message(member, dataset_a, tiny_base_model, tmp_path):
    tiny_base_model.location = str(tmp_path / "missing-model")
    tiny_base_model.save()
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={**TINY, "max_steps": 2})
    assert execute_job(str(job.uuid)) == JobStatus.FAILED
    job.refresh_from_db()
    assert job.error.startswith("The base model 'tiny-sd15' could not be loaded")


def test_cancel_while_running_stops_at_the_next_step_and_keeps_a_checkpoint(member, dataset_a, tiny_base_model):
    import threading
    import time

    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15",
                     config={**TINY, "max_steps": 400, "save_every_n_steps": 0, "sample_every_n_steps": 0})
    outcome = {}

    def run_in_worker_thread():
        from django.db import connection

        try:
            outcome["status"] = execute_job(str(job.uuid))
        finally:
            connection.close()

    runner = threading.Thread(target=run_in_worker_thread)
    runner.start()
    deadline = time.monotonic() + 60
    while TrainingJob.objects.get(pk=job.pk).step == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    lifecycle.request_cancel(job.pk)
    runner.join(timeout=60)
    assert outcome["status"] == JobStatus.CANCELLED
    job.refresh_from_db()
    assert 0 < job.step < 400 and job.checkpoint_path
    # What was trained so far is saved as a usable LoRA too.
    assert job.artifacts.filter(kind=ArtifactKind.LORA_KOHYA).exists()


@pytest.mark.asyncio
async def test_progress_is_published_to_the_job_group(member, dataset_a, tiny_base_model):
    from channels.db import database_sync_to_async as sync_to_async

    job = await sync_to_async(submit_job)(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15",
                                          config={**TINY, "max_steps": 3, "sample_every_n_steps": 0})
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"job.{job.uuid}", channel)
    await sync_to_async(execute_job)(str(job.uuid))
    messages = []
    while True:
        try:
            import asyncio

            messages.append((await asyncio.wait_for(layer.receive(channel), 1))["payload"])
        except TimeoutError:
            break
    progress = [m for m in messages if m["type"] == "progress"]
    assert progress[-1]["step"] == 3 and progress[-1]["percent"] == 100.0
    assert [m["status"] for m in messages if m["type"] == "status"][-1] == "completed"


def test_a_job_still_trains_after_its_dataset_is_deleted(member, dataset_a, tiny_base_model, api_for):
    from django.conf import settings

    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={**TINY, "max_steps": 2,
                                                                                        "sample_every_n_steps": 0})
    assert api_for(member).delete(f"/api/datasets/{dataset_a.uuid}").status_code == 204
    assert all((settings.MEDIA_ROOT / i["storage_name"]).is_file() for i in job.snapshot["images"])
    assert execute_job(str(job.uuid)) == JobStatus.COMPLETED
    # Deleting the job lets the bytes go, now that nothing needs them.
    TrainingJob.objects.filter(pk=job.pk).delete()
    assert not any((settings.MEDIA_ROOT / i["storage_name"]).exists() for i in job.snapshot["images"])


def test_two_jobs_submitted_at_once_both_complete_in_the_embedded_worker(member, dataset_a, tiny_base_model,
                                                                         monkeypatch):
    import dramatiq

    monkeypatch.delenv("LORASITE_TORCH_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    from lorasite.broker import get_broker

    team = dataset_a.team
    team.max_concurrent_jobs = 2
    team.save()
    broker = get_broker()
    broker.flush_all()
    # Both messages are in the queue before the two worker threads start: they take them at once.
    jobs = [submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15",
                       config={"resolution": 64, "max_steps": 3, "rank": 4}) for _ in range(2)]
    worker = dramatiq.Worker(broker, queues={"gpu"}, worker_threads=2)
    worker.start()
    try:
        broker.join("gpu", fail_fast=True, timeout=180_000)
        worker.join()
    finally:
        worker.stop()
    statuses = [TrainingJob.objects.get(pk=j.pk) for j in jobs]
    assert [(j.status, j.error) for j in statuses] == [(JobStatus.COMPLETED, "")] * 2
    assert {j.worker_id for j in statuses} and len({j.worker_id for j in statuses}) == 2
    # The two trainings share the CPUs instead of each taking all of them.
    import os

    expected = max(1, len(os.sched_getaffinity(0)) // 2)
    for job in statuses:
        lines = list(job.logs.values_list("line", flat=True))
        assert any(line.startswith(f"torch threads: {expected} (2 worker thread(s) in this process; ")
                   for line in lines), lines


def test_torch_threads_can_be_set_and_a_bad_value_is_a_clear_error(monkeypatch):
    from training_app.backends.base import BackendError
    from training_app.backends.local import torch_threads

    monkeypatch.setenv("LORASITE_TORCH_THREADS", "3")
    assert torch_threads() == 3
    monkeypatch.setenv("LORASITE_TORCH_THREADS", "lots")
    with pytest.raises(BackendError, match="whole number"):
        torch_threads()
    # Without ours, an operator's (or a test's) OMP_NUM_THREADS is the choice; ours wins over it.
    monkeypatch.delenv("LORASITE_TORCH_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert torch_threads() == 1
    monkeypatch.setenv("LORASITE_TORCH_THREADS", "2")
    assert torch_threads() == 2
    monkeypatch.delenv("LORASITE_TORCH_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    with pytest.raises(BackendError, match="OMP_NUM_THREADS must be at least 1"):
        torch_threads()


@pytest.mark.parametrize("package", ["lorasite", "training_app.trainer"])
@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_every_training_process_has_sleeping_openmp_waiters_unless_the_operator_says_otherwise(
    package, given, expected
):
    """Spinning OpenMP waiters made a 2-thread training 30-40x slower beside one other busy process.
    Every portal process (manage.py, daphne, dramatiq) imports the lorasite package first, and the
    trainer's own command line its package: each sets the policy before torch can load OpenMP."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = f"import {package}, os, sys; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, "False"]  # set, and torch not loaded yet


def test_a_loha_job_from_the_api_config_writes_the_kohya_file_only_and_logs_kohya_step_lines(
    member, dataset_a, tiny_base_model
):
    config = {**TINY, "max_steps": 4, "sample_every_n_steps": 0, "network": "loha", "target_layers": "all_linear_conv",
              "conv_rank": 8, "log_every_n_steps": 2}
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config=config)
    assert execute_job(str(job.uuid), worker_id="test-worker") == JobStatus.COMPLETED
    kinds = set(job.artifacts.values_list("kind", flat=True))
    assert ArtifactKind.LORA_KOHYA in kinds and ArtifactKind.LORA_DIFFUSERS not in kinds
    lines = list(job.logs.values_list("line", flat=True))
    assert [line.split(",")[0] for line in lines if line.startswith("steps: ")] == ["steps: 50% 2/4", "steps: 100% 4/4"]
    from django.conf import settings
    from safetensors import safe_open

    with safe_open(str(settings.MEDIA_ROOT / job.artifacts.get(kind=ArtifactKind.LORA_KOHYA).path), "pt") as handle:
        meta = handle.metadata()
    assert meta["ss_network_module"] == "lycoris.kohya" and '"algo": "loha"' in meta["ss_network_args"]
