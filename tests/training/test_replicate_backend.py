"""The Replicate backend wired into the portal, run by the real runner against the loopback Replicate fake:
registering it, availability, 422s and cost estimates before submit, Flux and SDXL jobs to the end
(logs, loss, cost, the LoRA), and the paths that must never pay twice (take-over, retry, lost answers).
Whole jobs on a real worker process are in test_replicate_worker.py; webhooks in test_replicate_webhooks_api.py."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError
from django.test import Client
from django.utils import timezone

from tests.conftest import make_dataset
from tests.fakes.replicate_sim import TrainingPlan
from tests.fakes.replicate_trainers import FLUX_TRAINER, SDXL_TRAINER, lora_file
from tests.training.conftest import REPLICATE_TOKEN_ENV, add_replicate
from training_app import lifecycle
from training_app.backends.registry import backend_for_job
from training_app.models import ArtifactKind, BackendConfig, JobStatus, ReplicateTraining, TrainingJob
from training_app.runner import execute_job
from training_app.services import submit_job

pytestmark = pytest.mark.django_db(transaction=True)


def submit(member, dataset, base_model="flux-dev", preset="flux", **config) -> TrainingJob:
    return submit_job(member, dataset_id=dataset.uuid, base_model=base_model, backend="repl", preset=preset,
                      config={"max_steps": 30, **config})


def logs(job) -> str:
    return "\n".join(TrainingJob.objects.get(pk=job.pk).logs.values_list("line", flat=True))


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def only_training(fake):
    (training,) = fake.trainings.values()
    return training


# -- registering ---------------------------------------------------------------------------------------
def test_add_backend_for_replicate_defaults_the_api_url_and_keeps_only_the_variable_name(team_a, fake_replicate):
    assert add_replicate("", "hardware=gpu-l40s", name="paid") == "paid"
    config = BackendConfig.objects.get(name="paid")
    assert config.base_url == "https://api.replicate.com" and config.token_env == REPLICATE_TOKEN_ENV
    assert config.options["destination"] == "acme/loras" and config.options["hardware"] == "gpu-l40s"
    assert config.options["trainers"]["flux"] == "ostris/flux-dev-lora-trainer"


@pytest.mark.parametrize(("options", "token_env", "text"), [
    ((), "", "Replicate needs an API token"),
    (("destination=not a model",), REPLICATE_TOKEN_ENV, "destination: owner/name"),
    (("trainers.sd15=acme/trainer",), REPLICATE_TOKEN_ENV, "trainers are per family"),
    (("hardware=gpu-b200",), REPLICATE_TOKEN_ENV, "no known price"),
])
def test_add_backend_refuses_a_replicate_backend_it_could_not_run(team_a, fake_replicate, options, token_env, text):
    with pytest.raises(CommandError, match=text):
        add_replicate(fake_replicate.base_url, *options, token_env=token_env)
    assert not BackendConfig.objects.exists()


# -- before a job runs ---------------------------------------------------------------------------------
def test_backends_api_shows_the_replicate_account_and_its_price(api_for, member, replicate_backend):
    by_name = {b["name"]: b for b in api_for(member).get("/api/backends?team=alpha").json()}
    repl = by_name["repl"]
    assert repl["available"] is True and repl["kind"] == "replicate" and repl["paid"] is True
    assert repl["queue"] == "remote" and repl["families"] == ["flux", "sdxl"]
    assert repl["facts"]["account"] == "acme" and repl["facts"]["price_per_second"] == 0.001525
    assert "Replicate account acme" in repl["detail"]
    assert replicate_backend.token not in str(by_name)


def test_a_refused_token_or_a_missing_variable_lists_the_backend_as_unavailable(api_for, member, replicate_backend,
                                                                               monkeypatch):
    monkeypatch.setenv(REPLICATE_TOKEN_ENV, "r8_not_the_right_token")
    repl = {b["name"]: b for b in api_for(member).get("/api/backends?team=alpha").json()}["repl"]
    assert repl["available"] is False and "HTTP 401" in repl["detail"]
    monkeypatch.delenv(REPLICATE_TOKEN_ENV)
    repl = {b["name"]: b for b in api_for(member).get("/api/backends?team=alpha").json()}["repl"]
    assert repl["available"] is False and "No Replicate API token" in repl["detail"]
    assert REPLICATE_TOKEN_ENV not in repl["detail"]


@pytest.mark.parametrize(("base_model", "config", "loc", "text"), [
    ("flux-dev", {"lr_warmup_steps": 50}, ["config", "lr_warmup_steps"], "no warmup"),
    ("flux-dev", {"max_steps": 7000}, ["config", "max_steps"], "3 to 6000 steps"),
    ("flux-dev", {"noise_offset": 0.1, "alpha": 4}, ["config", "alpha"], "alpha = rank"),
    ("tiny-sd15", {}, ["base_model"], "not sd15"),
])
def test_settings_the_trainer_cannot_run_are_a_422_at_submit_and_in_the_estimate(
        api_for, member, dataset_a, flux_model, tiny_base_model, replicate_backend, base_model, config, loc, text):
    api = api_for(member)
    body = {"dataset_id": str(dataset_a.uuid), "base_model": base_model, "backend": "repl", "preset": "flux",
            "config": {"max_steps": 30, **config}}
    for path in ("/api/jobs", "/api/estimate"):
        response = api.post(path, body)
        assert response.status_code == 422, response.content
        errors = response.json()["errors"]
        assert loc in [e["loc"] for e in errors] and text in response.json()["detail"]
    assert not TrainingJob.objects.exists() and not replicate_backend.trainings


def test_the_estimate_prices_the_run_on_the_backends_hardware(api_for, member, dataset_a, flux_model, replicate_backend):
    response = api_for(member).post("/api/estimate", {"dataset_id": str(dataset_a.uuid), "base_model": "flux-dev",
                                                      "backend": "repl", "preset": "flux"})
    assert response.status_code == 200
    estimate = response.json()
    # 1000 steps × 1.6 s on an H100 + 90 s start-up, at $0.001525 a second.
    assert estimate["total_steps"] == 1000
    assert estimate["estimated_cost_usd"] == round((1000 * 1.6 + 90) * 0.001525, 2)


# -- whole jobs --------------------------------------------------------------------------------------
def test_a_flux_job_runs_to_the_lora_with_loss_logs_and_its_cost(member, dataset_a, flux_model, replicate_backend):
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    job.refresh_from_db()
    training = only_training(replicate_backend)
    assert job.remote_id == training.id and job.step == job.total_steps == 30
    # What the trainer got: our config on its inputs, our captions, autocaption off.
    assert training.input["steps"] == 30 and training.input["lora_rank"] == 16
    assert training.input["autocaption"] is False and training.input["trigger_word"] == "shp"
    assert sorted(training.captions.values())[0].startswith("shp, a square number")
    # The loss curve is the trainer's, parsed from its tqdm lines (the latent-caching bar is not a step).
    assert job.loss_points.count() == 30 and 0.05 < job.loss < 0.2
    text = logs(job)
    assert "Caching latents to memory: 100%" in text and "Loading Flux model" in text
    assert text.count("flux_train_replicate:") <= 11  # the training bar every tenth, not every step
    assert "mixed_precision = 'bf16' is not used by the Flux trainer" in text
    assert job.cost_usd == round(training.to_json("")["metrics"]["predict_time"] * 0.001525, 4)
    files = {a.kind: Path(settings.MEDIA_ROOT) / a.path for a in job.artifacts.all()}
    assert set(files) == {ArtifactKind.LORA_REMOTE, ArtifactKind.LORA_DIFFUSERS}
    assert files[ArtifactKind.LORA_REMOTE].read_bytes() == lora_file(FLUX_TRAINER, 16, training.id)


def test_an_sdxl_job_sends_captions_in_caption_csv_and_stores_the_trainers_lora(member, dataset_a, sdxl_model,
                                                                              replicate_backend):
    job = submit(member, dataset_a, base_model="sdxl-base", preset="fast", max_steps=12, rank=8, alpha=None)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED, TrainingJob.objects.get(pk=job.pk).error
    training = only_training(replicate_backend)
    assert training.trainer is SDXL_TRAINER and training.input["max_train_steps"] == 12
    assert "caption.csv" in training.dataset and b"shp, a square number 0" in training.dataset["caption.csv"]
    remote = TrainingJob.objects.get(pk=job.pk).artifacts.get(kind=ArtifactKind.LORA_REMOTE)
    assert (Path(settings.MEDIA_ROOT) / remote.path).read_bytes() == lora_file(SDXL_TRAINER, 8, training.id)
    assert TrainingJob.objects.get(pk=job.pk).step == 12


def test_an_uncaptioned_dataset_lets_the_trainer_caption_and_the_log_says_so(member, team_a, flux_model,
                                                                            replicate_backend):
    dataset = make_dataset(team_a, member, name="bare", count=3, captions=False)
    job = submit(member, dataset)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    assert only_training(replicate_backend).input["autocaption"] is True
    assert "captioned by the trainer (autocaption)" in logs(job)


def test_cancel_stops_the_training_on_replicate(member, dataset_a, flux_model, replicate_backend):
    replicate_backend.plan_next(TrainingPlan(pause_at_step=5))
    job = submit(member, dataset_a)
    thread = threading.Thread(target=execute_job, args=(str(job.uuid), "w1"))
    thread.start()
    wait_for(lambda: TrainingJob.objects.filter(pk=job.pk, step=5).exists())
    lifecycle.request_cancel(job.pk)
    thread.join(30)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and only_training(replicate_backend).status == "canceled"
    assert not job.artifacts.exists()


def test_a_job_taken_over_by_another_worker_reattaches_without_a_second_training(member, dataset_a, flux_model,
                                                                                replicate_backend):
    replicate_backend.plan_next(TrainingPlan(pause_at_step=10))
    job = submit(member, dataset_a)
    first = threading.Thread(target=execute_job, args=(str(job.uuid), "w1"))
    first.start()
    wait_for(lambda: TrainingJob.objects.filter(pk=job.pk, step=10).exists())
    assert lifecycle.requeue_lost(job.pk, timezone.now() + timedelta(hours=1), max_attempts=3) == JobStatus.QUEUED
    first.join(30)
    training = only_training(replicate_backend)
    assert training.status == "processing"  # w1 left it alone
    second = threading.Thread(target=execute_job, args=(str(job.uuid), "w2"))
    second.start()
    wait_for(lambda: f"re-attached to the replicate run {training.id} (running)" in logs(job))
    replicate_backend.release(training.id)
    second.join(30)
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.COMPLETED
    assert len(replicate_backend.trainings) == 1
    text = logs(job)
    # The successor went on from where the job's log was: the trainer's preamble is there once.
    assert text.count("Loading Flux model") == 1


def test_a_training_whose_id_was_never_stored_is_found_by_the_jobs_upload(member, dataset_a, flux_model,
                                                                         replicate_backend):
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.COMPLETED
    job.refresh_from_db()
    training_id = job.remote_id
    # As if the worker had died between Replicate's answer and its own record of the id.
    ReplicateTraining.objects.filter(job=job).update(training_id="")
    job.remote_id = ""
    found = backend_for_job(job).find_run(job, None)
    assert found.remote_id == training_id and found.state == "succeeded"


def test_a_retried_job_starts_a_new_training_instead_of_reattaching_to_the_failed_one(member, dataset_a, flux_model,
                                                                                     replicate_backend):
    replicate_backend.plan_next(TrainingPlan(fail_at_step=4, error="CUDA out of memory"))
    job = submit(member, dataset_a)
    assert execute_job(str(job.uuid), "w1") == JobStatus.FAILED
    failed_id = TrainingJob.objects.get(pk=job.pk).remote_id
    lifecycle.retry(job.pk)
    assert execute_job(str(job.uuid), "w2") == JobStatus.COMPLETED
    job.refresh_from_db()
    assert len(replicate_backend.trainings) == 2 and job.remote_id != failed_id
    assert replicate_backend.trainings[job.remote_id].status == "succeeded"


def test_the_job_page_shows_the_remote_run_and_what_it_cost(member, dataset_a, flux_model, replicate_backend):
    job = submit(member, dataset_a)
    execute_job(str(job.uuid), "w1")
    job.refresh_from_db()
    client = Client()
    client.force_login(member)
    page = client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    assert job.remote_id in page and f"${job.cost_usd:.4f}" in page
    assert "Download as the remote trainer wrote it" in page and "weights?layout=remote" in page
