"""ComfyUI jobs in production mode: daphne + a real `dramatiq` worker on the `remote` queue (Redis) +
the loopback ComfyUI fake. Submit through the HTTP API, watch the job websocket, download the LoRA;
cancel; a failing run; kill -9 the worker and see its successor re-attach (exactly one prompt)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import uuid
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command

from lorasite.accounts.models import ApiToken
from tests.fakes.comfyui_server import FakeComfyUI
from tests.services import (
    bin_path,
    free_port,
    production_env,
    require_redis,
    start_process,
    stop_process,
    wait_for_port,
)
from tests.training.test_job_workers import Stack, wait_for, watch
from training_app.models import JobStatus, TrainingJob

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SMALL = {"resolution": 64, "batch_size": 1, "rank": 4, "optimizer": "adamw", "lr_scheduler": "constant"}


class RemoteStack(Stack):
    def start_worker(self):
        worker = start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                                "--queues", "remote", "default"], self.env)
        self.workers.append(worker)
        return worker


@pytest.fixture
def comfy(tiny_base_model, team_a):
    with FakeComfyUI(Path(tiny_base_model.location) / "unet") as server:
        call_command("add_backend", "desk-comfy", "--team", "alpha", "--type", "comfyui", "--base-url", server.url,
                     "--option", "checkpoints.tiny-sd15=v1-5-pruned-emaonly.safetensors", stdout=io.StringIO())
        yield server


@pytest.fixture
def stack(settings, comfy):
    redis_url = require_redis()
    tag = uuid.uuid4().hex[:8]
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-test-{tag}",
                         CHANNEL_LAYER_PREFIX=f"lorasite-test-{tag}", ALLOWED_HOSTS="127.0.0.1",
                         LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR), WORKER_CHECKIN_SECONDS="1",
                         JOB_HEARTBEAT_SECONDS="1", JOB_STALE_AFTER_SECONDS="4", OMP_NUM_THREADS="1")
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"], env)
    s = RemoteStack(env, port)
    try:
        wait_for_port(port, web)
        yield s
    finally:
        for worker in s.workers:
            log = stop_process(worker, timeout=15)
            if "Traceback" in log:
                print("worker log:\n" + log)
        log = stop_process(web)
        if "Traceback" in log:
            print("web log:\n" + log)


@pytest.fixture
def token(member):
    return ApiToken.issue(member, "remote-worker-tests")[1]


def submit(stack, token, dataset, **config):
    response = httpx.post(f"{stack.base}/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                          json={"dataset_id": str(dataset.uuid), "base_model": "tiny-sd15", "backend": "desk-comfy",
                                "config": {**SMALL, **config}})
    assert response.status_code == 201, response.text
    return response.json()


def ended(message):
    return message["type"] == "status" and message["status"] in ("completed", "failed", "cancelled")


def test_a_comfyui_job_streams_live_progress_and_its_lora_downloads(stack, token, dataset_a, tiny_base_model, comfy,
                                                                    tmp_path):
    comfy.behaviour.step_seconds = 0.1
    stack.start_worker()
    job = submit(stack, token, dataset_a, max_steps=20)
    messages = asyncio.run(watch(stack, token, job["id"], ended, timeout=120))
    statuses = [m["status"] for m in messages if m["type"] == "status"]
    assert statuses[-1] == "completed", messages[-5:]
    assert "running" in statuses
    steps = [m["step"] for m in messages if m["type"] == "progress"]
    # Live: several intermediate steps arrived while the server trained, in order.
    assert len({s for s in steps if 0 < s < 20}) >= 3 and steps == sorted(steps) and steps[-1] == 20
    headers = {"Authorization": f"Bearer {token}"}
    for layout in ("kohya", "diffusers"):
        response = httpx.get(f"{stack.base}/api/jobs/{job['id']}/weights?layout={layout}", headers=headers, timeout=30)
        assert response.status_code == 200
        path = tmp_path / f"{layout}.safetensors"
        path.write_bytes(response.content)
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(tiny_base_model.location, local_files_only=True)
        pipe.load_lora_weights(str(path))
        assert any("lora" in name for name, _ in pipe.unet.named_parameters())
    assert len(comfy.prompts_received) == 1


def test_cancel_on_a_worker_interrupts_the_server(stack, token, dataset_a, comfy):
    comfy.behaviour.step_seconds = 0.2
    stack.start_worker()
    job = submit(stack, token, dataset_a, max_steps=300)
    row = TrainingJob.objects.filter(uuid=job["id"])
    wait_for(lambda: row.filter(status=JobStatus.RUNNING, step__gte=2).exists(), timeout=60)
    response = httpx.post(f"{stack.base}/api/jobs/{job['id']}/cancel",
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200
    wait_for(lambda: row.filter(status=JobStatus.CANCELLED).exists(), timeout=60)
    assert comfy.interrupted == {row.get().remote_id}


def test_a_failing_run_fails_the_job_with_the_servers_error(stack, token, dataset_a, comfy):
    comfy.behaviour.fail_at_step = 2
    stack.start_worker()
    job = submit(stack, token, dataset_a, max_steps=10)
    messages = asyncio.run(watch(stack, token, job["id"], ended, timeout=120))
    assert messages[-1]["status"] == "failed"
    assert "TrainLoraNode) failed: torch.OutOfMemoryError" in messages[-1]["error"]


def test_a_killed_worker_is_replaced_and_the_job_reattaches_with_exactly_one_prompt(stack, token, dataset_a, comfy):
    comfy.behaviour.step_seconds = 0.15
    first = stack.start_worker()
    job = submit(stack, token, dataset_a, max_steps=80)
    row = TrainingJob.objects.filter(uuid=job["id"])
    wait_for(lambda: row.filter(status=JobStatus.RUNNING, step__gte=3).exclude(remote_id="").exists(), timeout=60)
    os.kill(int(row.get().worker_id.split(":")[1]), signal.SIGKILL)
    stop_process(first)
    # The next worker's maintenance thread finds the stale heartbeat, re-queues, and follows the same prompt.
    stack.start_worker()
    wait_for(lambda: row.filter(status__in=[JobStatus.COMPLETED, JobStatus.FAILED]).exists(), timeout=120)
    done = row.get()
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.attempts == 2 and done.step == 80
    assert len(comfy.prompts_received) == 1
    assert any(line.startswith("re-attached to the comfyui run") for line in done.logs.values_list("line", flat=True))
