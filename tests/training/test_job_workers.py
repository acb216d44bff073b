"""The whole loop in production mode: daphne + a real `dramatiq` worker process on Redis.

Submit through the HTTP API, watch the job websocket, download the LoRA; cancel mid-run; kill -9 a
worker mid-run and see the reaper re-queue the job and a new worker resume it from its checkpoint,
ending with the same LoRA as an uninterrupted run of the same seed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from lorasite.accounts.models import ApiToken
from tests.services import (
    bin_path,
    free_port,
    production_env,
    require_redis,
    start_process,
    stop_process,
    wait_for_port,
)
from training_app.models import ArtifactKind, JobStatus, TrainingJob

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TINY = {"resolution": 64, "batch_size": 2, "rank": 4, "learning_rate": 3e-3}


class Stack:
    def __init__(self, env, port):
        self.env, self.port, self.workers = env, port, []
        self.base = f"http://127.0.0.1:{port}"

    def start_worker(self):
        worker = start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                                "--queues", "gpu", "default"], self.env)
        self.workers.append(worker)
        return worker


@pytest.fixture
def stack(settings):
    redis_url = require_redis()
    tag = uuid.uuid4().hex[:8]
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-test-{tag}",
                         CHANNEL_LAYER_PREFIX=f"lorasite-test-{tag}", ALLOWED_HOSTS="127.0.0.1",
                         LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR), WORKER_CHECKIN_SECONDS="1",
                         JOB_HEARTBEAT_SECONDS="1", JOB_STALE_AFTER_SECONDS="4", OMP_NUM_THREADS="1")
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"], env)
    s = Stack(env, port)
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


def submit(stack, token, dataset, **config):
    response = httpx.post(f"{stack.base}/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                          json={"dataset_id": str(dataset.uuid), "base_model": "tiny-sd15", "config": {**TINY, **config}})
    assert response.status_code == 201, response.text
    return response.json()


async def watch(stack, token, job_id, until, timeout=120.0):
    """Collect websocket messages of a job until `until(message)` is true."""
    messages = []
    async with websockets.connect(f"ws://127.0.0.1:{stack.port}/ws/jobs/{job_id}/",
                                  additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await ws.recv())
                messages.append(message)
                if until(message):
                    return messages


def wait_for(predicate, timeout=120.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def token(member):
    return ApiToken.issue(member, "worker-tests")[1]


def test_job_runs_on_a_worker_process_and_streams_progress(stack, token, dataset_a, tiny_base_model, tmp_path):
    stack.start_worker()
    job = submit(stack, token, dataset_a, max_steps=12)
    messages = asyncio.run(watch(stack, token, job["id"], lambda m: m.get("status") in {"completed", "failed"}))
    assert messages[0]["type"] == "snapshot"
    steps = [m["step"] for m in messages if m["type"] == "progress"]
    assert steps and steps == sorted(steps) and steps[-1] == 12
    assert messages[-1]["status"] == "completed", messages[-1]
    headers = {"Authorization": f"Bearer {token}"}
    pipe = _fresh_pipeline(tiny_base_model)
    for layout in ("kohya", "diffusers"):
        response = httpx.get(f"{stack.base}/api/jobs/{job['id']}/weights?layout={layout}", headers=headers, timeout=30)
        assert response.status_code == 200
        path = tmp_path / f"{layout}.safetensors"
        path.write_bytes(response.content)
        pipe.load_lora_weights(str(path), adapter_name=layout)
    assert set(pipe.get_list_adapters()["unet"]) == {"kohya", "diffusers"}


def _fresh_pipeline(base_model):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(base_model.location, safety_checker=None, requires_safety_checker=False)


def test_cancel_mid_run_ends_cancelled_with_a_checkpoint(stack, token, dataset_a, tiny_base_model):
    stack.start_worker()
    job = submit(stack, token, dataset_a, max_steps=5000)

    async def scenario():
        async with websockets.connect(f"ws://127.0.0.1:{stack.port}/ws/jobs/{job['id']}/",
                                      additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            async with asyncio.timeout(120):
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "progress" and message["step"] >= 3:
                        break
                response = await asyncio.to_thread(httpx.post, f"{stack.base}/api/jobs/{job['id']}/cancel",
                                                   headers={"Authorization": f"Bearer {token}"}, timeout=30)
                assert response.json()["status"] == "cancelling"
                while True:
                    message = json.loads(await ws.recv())
                    if message["type"] == "status" and message["status"] == "cancelled":
                        return

    asyncio.run(scenario())
    saved = TrainingJob.objects.get(uuid=job["id"])
    assert saved.status == JobStatus.CANCELLED and 3 <= saved.step < 5000
    assert saved.artifacts.filter(kind=ArtifactKind.CHECKPOINT).exists()
    assert saved.artifacts.filter(kind=ArtifactKind.LORA_KOHYA).exists()


def test_killed_worker_job_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
        stack, token, dataset_a, tiny_base_model, tmp_path):
    first = stack.start_worker()
    config = {"max_steps": 150, "save_every_n_steps": 10, "seed": 7}
    job = submit(stack, token, dataset_a, **config)
    row = TrainingJob.objects.filter(uuid=job["id"])
    wait_for(lambda: row.filter(checkpoint_path__gt="", step__gte=12).exists())
    running = row.get()
    pid = int(running.worker_id.split(":")[1])
    os.kill(pid, signal.SIGKILL)
    stop_process(first)
    killed_at_step = row.get().step
    assert row.get().status == JobStatus.RUNNING
    # A fresh worker's maintenance thread finds the stale heartbeat (4 s here), re-queues, and runs it.
    stack.start_worker()
    wait_for(lambda: row.filter(status__in=[JobStatus.COMPLETED, JobStatus.FAILED]).exists(), timeout=180)
    done = row.get()
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.attempts == 2 and done.step == 150
    lines = list(done.logs.values_list("line", flat=True))
    resumed = [line for line in lines if line.startswith("resuming from checkpoint")]
    assert resumed, lines[-20:]
    # It resumed from a checkpoint at or before the kill, not from scratch.
    resumed_step = int(Path(resumed[0].split()[-1]).name.split("-")[-1])
    assert 10 <= resumed_step <= killed_at_step
    # The dead attempt's points past the checkpoint are gone: one loss point per step.
    assert list(done.loss_points.order_by("step").values_list("step", flat=True)) == list(range(1, 151))

    # The same job, never interrupted, gives the same LoRA tensor for tensor.
    reference = submit(stack, token, dataset_a, **config)
    reference_row = TrainingJob.objects.filter(uuid=reference["id"])
    wait_for(lambda: reference_row.filter(status__in=[JobStatus.COMPLETED, JobStatus.FAILED]).exists(), timeout=180)
    assert reference_row.get().status == JobStatus.COMPLETED, reference_row.get().error
    assert reference_row.get().attempts == 1
    resumed_tensors = _download_lora(stack, token, job["id"], tmp_path / "resumed.safetensors")
    reference_tensors = _download_lora(stack, token, reference["id"], tmp_path / "reference.safetensors")
    assert resumed_tensors.keys() == reference_tensors.keys() and resumed_tensors
    different = [key for key in reference_tensors if not (resumed_tensors[key] == reference_tensors[key]).all()]
    assert not different, f"{len(different)} of {len(reference_tensors)} tensors differ, e.g. {different[:3]}"


def _download_lora(stack, token, job_id, path):
    from safetensors.torch import load_file

    response = httpx.get(f"{stack.base}/api/jobs/{job_id}/weights?layout=kohya",
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    path.write_bytes(response.content)
    return load_file(path)
