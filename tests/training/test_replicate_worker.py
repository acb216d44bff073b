"""Replicate jobs in production mode: daphne + a real `dramatiq` worker on the `remote` queue (Redis) + the
loopback Replicate fake. Submit through the HTTP API, watch the job websocket, download the LoRA; cancel;
each error Replicate answers (401, 404 destination, 422, 429 with its reset, 500s, a failed training);
kill -9 the worker and see its successor re-attach; a create call whose answer is lost. Each ends with
exactly as many trainings on the fake as were paid for."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import httpx
import pytest
from django.utils import timezone

from tests.fakes.replicate_sim import TrainingPlan
from tests.fakes.replicate_trainers import FLUX_TRAINER, SDXL_TRAINER, lora_file
from tests.services import (
    bin_path,
    free_port,
    production_env,
    require_redis,
    start_process,
    stop_process,
    wait_for_port,
)
from tests.training.conftest import REPLICATE_TOKEN_ENV, add_replicate
from tests.training.test_job_workers import Stack, wait_for, watch
from training_app.models import BackendConfig, JobStatus, TrainingJob

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

WRONG_TOKEN_ENV = "REPLICATE_WRONG_TOKEN"


class ReplicateStack(Stack):
    def start_worker(self, **env: str):
        worker = start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                                "--queues", "remote", "default"], {**self.env, **env})
        self.workers.append(worker)
        return worker


@pytest.fixture
def stack(settings, fake_replicate, team_a):
    redis_url = require_redis()
    tag = uuid.uuid4().hex[:8]
    add_replicate(fake_replicate.base_url, "poll_seconds=0.2")
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-test-{tag}",
                         CHANNEL_LAYER_PREFIX=f"lorasite-test-{tag}", ALLOWED_HOSTS="127.0.0.1",
                         LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR), WORKER_CHECKIN_SECONDS="1",
                         JOB_HEARTBEAT_SECONDS="1", JOB_STALE_AFTER_SECONDS="4", JOB_RETRY_BACKOFF_SECONDS="1",
                         JOB_RECONCILE_SECONDS="1", JOB_MAX_ATTEMPTS="5", OMP_NUM_THREADS="1",
                         **{REPLICATE_TOKEN_ENV: fake_replicate.token, WRONG_TOKEN_ENV: "r8_not_this_accounts"})
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"], env)
    s = ReplicateStack(env, port)
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
    from lorasite.accounts.models import ApiToken

    return ApiToken.issue(member, "replicate-worker-tests")[1]


def submit(stack, token, dataset, base_model="flux-dev", preset="flux", **config):
    response = httpx.post(f"{stack.base}/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                          json={"dataset_id": str(dataset.uuid), "base_model": base_model, "backend": "repl",
                                "preset": preset, "config": {"max_steps": 40, **config}})
    assert response.status_code == 201, response.text
    return response.json()


def ended(message):
    return message["type"] == "status" and message["status"] in ("completed", "failed", "cancelled")


def finished(job_id, timeout=90.0) -> TrainingJob:
    row = TrainingJob.objects.filter(uuid=job_id)
    wait_for(lambda: row.filter(status__in=[JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]).exists(),
             timeout=timeout)
    return row.get()


def lines(job: TrainingJob) -> list[str]:
    return list(job.logs.values_list("line", flat=True))


def configure(**options):
    config = BackendConfig.objects.get(name="repl")
    config.options = {**config.options, **options}
    config.save()


def test_a_flux_job_streams_live_progress_and_its_lora_downloads(stack, token, dataset_a, flux_model, fake_replicate):
    fake_replicate.plan_next(TrainingPlan(seconds_per_step=0.05))
    stack.start_worker()
    job = submit(stack, token, dataset_a)
    assert job["status"] == "queued"
    messages = asyncio.run(watch(stack, token, job["id"], ended, timeout=90))
    statuses = [m["status"] for m in messages if m["type"] == "status"]
    assert statuses[-1] == "completed", messages[-5:]
    assert "running" in statuses
    progress = [m for m in messages if m["type"] == "progress"]
    steps = [m["step"] for m in progress]
    # Live: intermediate steps (with the trainer's loss) arrived while Replicate trained, in order.
    assert len({s for s in steps if 0 < s < 40}) >= 3 and steps == sorted(steps) and steps[-1] == 40
    assert any(m["loss"] is not None and m["loss"] < 0.5 for m in progress)
    assert any("flux_train_replicate:" in m["line"] for m in messages if m["type"] == "log")
    (training,) = fake_replicate.trainings.values()
    headers = {"Authorization": f"Bearer {token}"}
    for layout in ("remote", "diffusers"):
        response = httpx.get(f"{stack.base}/api/jobs/{job['id']}/weights?layout={layout}", headers=headers, timeout=30)
        assert response.status_code == 200
        assert response.content == lora_file(FLUX_TRAINER, 16, training.id)
    detail = httpx.get(f"{stack.base}/api/jobs/{job['id']}", headers=headers, timeout=30).json()
    assert detail["remote_id"] == training.id and detail["cost_usd"] is not None and detail["cost_usd"] > 0


def test_an_sdxl_job_completes_on_its_own_trainer(stack, token, dataset_a, sdxl_model, fake_replicate):
    stack.start_worker()
    job = submit(stack, token, dataset_a, base_model="sdxl-base", preset="fast", max_steps=16, alpha=None)
    done = finished(job["id"])
    assert done.status == JobStatus.COMPLETED, done.error
    (training,) = fake_replicate.trainings.values()
    assert training.trainer is SDXL_TRAINER and done.step == 16


def test_cancel_on_a_worker_cancels_the_training(stack, token, dataset_a, flux_model, fake_replicate):
    fake_replicate.plan_next(TrainingPlan(seconds_per_step=0.05, pause_at_step=5))
    stack.start_worker()
    job = submit(stack, token, dataset_a)
    row = TrainingJob.objects.filter(uuid=job["id"])
    wait_for(lambda: row.filter(status=JobStatus.RUNNING, step__gte=3).exists(), timeout=60)
    response = httpx.post(f"{stack.base}/api/jobs/{job['id']}/cancel",
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200
    assert finished(job["id"]).status == JobStatus.CANCELLED
    (training,) = fake_replicate.trainings.values()
    assert training.status == "canceled" and training.id == row.get().remote_id


def test_a_refused_token_fails_the_job_saying_where_the_token_comes_from(stack, token, dataset_a, flux_model,
                                                                        fake_replicate):
    BackendConfig.objects.filter(name="repl").update(token_env=WRONG_TOKEN_ENV)
    stack.start_worker()
    done = finished(submit(stack, token, dataset_a)["id"])
    assert done.status == JobStatus.FAILED
    assert done.error == ("Replicate refused the API token (HTTP 401): check the token in the environment "
                          "variable this backend names.")
    assert "r8_not_this_accounts" not in done.error and not fake_replicate.trainings


@pytest.mark.parametrize("where", ["owner", "create"])
def test_a_missing_destination_fails_the_job_naming_it(stack, token, dataset_a, flux_model, fake_replicate, where):
    if where == "owner":
        configure(destination="someone-else/loras")
        expected = "Replicate has no account or organisation 'someone-else' this token can create models in"
    else:
        # Deleted between our check and the create call: Replicate's own 404 for a destination.
        fake_replicate.inject("POST", r"/trainings$", 404, detail="The specified training destination does not exist")
        expected = "Replicate has no destination model acme/loras for this account"
    stack.start_worker()
    done = finished(submit(stack, token, dataset_a)["id"])
    assert done.status == JobStatus.FAILED and done.error.startswith(expected), done.error
    assert done.attempts == 1 and not fake_replicate.trainings


def test_inputs_the_trainer_refuses_fail_the_job_naming_them(stack, token, dataset_a, flux_model, fake_replicate):
    # A backend whose flux trainer is really the SDXL one: Replicate's 422 lists what it does not take.
    configure(trainers={"flux": SDXL_TRAINER.ref})
    stack.start_worker()
    done = finished(submit(stack, token, dataset_a)["id"])
    assert done.status == JobStatus.FAILED and done.attempts == 1
    assert done.error.startswith("Replicate refused the request (HTTP 422): ")
    assert "Additional property trigger_word is not allowed" in done.error
    assert not fake_replicate.trainings


def test_a_rate_limited_create_waits_for_the_reset_then_starts_one_training(stack, token, dataset_a, flux_model,
                                                                           fake_replicate):
    fake_replicate.rate_limit(reset_s=3, method="POST", path=r"/trainings$")
    stack.start_worker()
    job = submit(stack, token, dataset_a)
    row = TrainingJob.objects.filter(uuid=job["id"])
    waiting = wait_for(lambda: row.filter(status=JobStatus.QUEUED, error__contains="rate-limiting").first(),
                       timeout=60, interval=0.05)
    assert "retry in ~3 s" in waiting.error
    assert (waiting.not_before - timezone.now()).total_seconds() > 1.5  # the reset, not the 1 s back-off
    done = finished(job["id"])
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.attempts == 2 and len(fake_replicate.trainings) == 1
    assert "reusing the dataset the previous attempt uploaded" in lines(done)


def test_server_errors_are_retried_with_back_off_and_the_job_completes(stack, token, dataset_a, flux_model,
                                                                      fake_replicate):
    # Three 500s on the upload: the client's own two retries fail too, so the job backs off and tries again.
    fake_replicate.inject("POST", r"/v1/files$", 500, times=3)
    fake_replicate.inject("GET", r"/v1/trainings/", 503, times=2)
    stack.start_worker()
    job = submit(stack, token, dataset_a)
    row = TrainingJob.objects.filter(uuid=job["id"])
    retrying = wait_for(lambda: row.filter(error__contains="server error").first(), timeout=60, interval=0.05)
    assert "Replicate had a server error (HTTP 500); it is worth retrying later." in retrying.error
    done = finished(job["id"])
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.attempts == 2 and len(fake_replicate.trainings) == 1


def test_a_500_on_create_looks_for_the_training_before_creating_one(stack, token, dataset_a, flux_model,
                                                                   fake_replicate):
    fake_replicate.inject("POST", r"/trainings$", 500)
    stack.start_worker()
    done = finished(submit(stack, token, dataset_a)["id"], timeout=120)
    assert done.status == JobStatus.COMPLETED, done.error
    # The first attempt looked (and found nothing), the second looked again, then created exactly one.
    assert done.attempts == 2 and len(fake_replicate.trainings) == 1
    assert sum(1 for r in fake_replicate.requests if r.method == "POST" and r.path.endswith("/trainings")) == 2


def test_a_failed_training_fails_the_job_with_replicates_error(stack, token, dataset_a, flux_model, fake_replicate):
    fake_replicate.plan_next(TrainingPlan(seconds_per_step=0.02, fail_at_step=5,
                                          error="CUDA out of memory. Tried to allocate 2.00 GiB"))
    stack.start_worker()
    job = submit(stack, token, dataset_a)
    messages = asyncio.run(watch(stack, token, job["id"], ended, timeout=90))
    assert messages[-1]["status"] == "failed"
    (training,) = fake_replicate.trainings.values()
    assert messages[-1]["error"] == (f"The Replicate training {training.id} failed: "
                                     "CUDA out of memory. Tried to allocate 2.00 GiB")
    done = TrainingJob.objects.get(uuid=job["id"])
    assert done.attempts == 1 and "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in lines(done)


def test_a_killed_worker_is_replaced_and_the_job_reattaches_to_its_one_training(stack, token, dataset_a, flux_model,
                                                                               fake_replicate):
    fake_replicate.plan_next(TrainingPlan(seconds_per_step=0.05, pause_at_step=10))
    first = stack.start_worker()
    job = submit(stack, token, dataset_a)
    row = TrainingJob.objects.filter(uuid=job["id"])
    wait_for(lambda: row.filter(status=JobStatus.RUNNING, step=10).exclude(remote_id="").exists(), timeout=60)
    os.kill(int(row.get().worker_id.split(":")[1]), signal.SIGKILL)
    stop_process(first)
    # The next worker's maintenance thread finds the stale heartbeat, re-queues, and follows the same training.
    stack.start_worker()
    training_id = row.get().remote_id
    wait_for(lambda: any(line == f"re-attached to the replicate run {training_id} (running)"
                         for line in lines(row.get())), timeout=60)
    fake_replicate.release(training_id)
    done = finished(job["id"])
    assert done.status == JobStatus.COMPLETED, done.error
    assert done.attempts == 2 and done.step == 40 and len(fake_replicate.trainings) == 1
    assert done.artifacts.exists()


def test_a_create_call_that_times_out_is_found_by_its_upload_and_never_sent_twice(stack, token, dataset_a, flux_model,
                                                                                  fake_replicate):
    BackendConfig.objects.filter(name="repl").update(request_timeout_seconds=1.0)
    # Replicate starts the training, but its answer comes after the worker stopped waiting.
    fake_replicate.inject("POST", r"/trainings$", None, delay_s=2.5)
    stack.start_worker()
    done = finished(submit(stack, token, dataset_a)["id"], timeout=120)
    assert done.status == JobStatus.COMPLETED, done.error
    (training,) = fake_replicate.trainings.values()
    assert done.remote_id == training.id
    assert f"found the training {training.id} the unanswered create call started" in lines(done)
    assert sum(1 for r in fake_replicate.requests if r.method == "POST" and r.path.endswith("/trainings")) == 1
