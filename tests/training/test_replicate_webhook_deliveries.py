"""Replicate's webhook deliveries at POST /api/webhooks/replicate/<backend uuid>: signed ones are kept on
their job for the worker, repeats dropped by webhook-id, unsigned/stale/wrongly signed ones refused, and
an outsider learns nothing. End to end on daphne + a real worker: with SITE_URL set, deliveries feed the
job instead of polls; refused deliveries leave the job to the safety poll."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from django.test import Client

from tests.fakes.replicate_sim import TrainingPlan, sign
from tests.training.conftest import REPLICATE_TOKEN_ENV
from tests.training.test_job_workers import watch
from tests.training.test_replicate_worker import configure, ended, finished, stack, submit, token  # noqa: F401  (fixtures)
from training_app.models import BackendConfig, JobStatus, ReplicateTraining, WebhookReceipt
from training_app.services import submit_job

pytestmark = pytest.mark.django_db(transaction=True)

WRONG_SECRET = "whsec_" + base64.b64encode(b"not-the-account-secret-000000000").decode()


@pytest.fixture
def config(replicate_backend):
    return BackendConfig.objects.get(name="repl")


@pytest.fixture
def job(member, dataset_a, flux_model, config):
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="flux-dev", backend="repl", preset="flux",
                     config={"max_steps": 30})
    ReplicateTraining.objects.create(job=job, input_images="http://upload/for-this-job", training_id="trainingone")
    return job


def training(status="processing", logs="Loading Flux model\n", training_id="trainingone",
             upload="http://upload/for-this-job"):
    return {"id": training_id, "status": status, "logs": logs, "input": {"input_images": upload}, "error": None,
            "output": None, "metrics": {}}


def deliver(config, body, secret, *, webhook_id="msg_1", timestamp=None, client=None, headers=True):
    raw = json.dumps(body).encode()
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    extra = {}
    if headers:
        extra = {"HTTP_WEBHOOK_ID": webhook_id, "HTTP_WEBHOOK_TIMESTAMP": timestamp,
                 "HTTP_WEBHOOK_SIGNATURE": sign(secret, webhook_id, timestamp, raw)}
    return (client or Client()).post(f"/api/webhooks/replicate/{config.uuid}", raw, content_type="application/json",
                                     **extra)


def latest(job):
    return ReplicateTraining.objects.get(job=job).latest


def test_a_signed_delivery_is_kept_on_its_job_for_the_worker(config, job, fake_replicate):
    response = deliver(config, training(), fake_replicate.webhook_secret)
    assert response.status_code == 200 and response.json() == {"result": "stored"}
    assert latest(job) == training()


def test_a_repeated_webhook_id_is_acknowledged_and_dropped(config, job, fake_replicate):
    assert deliver(config, training(logs="one\n"), fake_replicate.webhook_secret).json() == {"result": "stored"}
    again = deliver(config, training(logs="one\ntwo\n"), fake_replicate.webhook_secret)
    assert again.status_code == 200 and again.json() == {"result": "duplicate"}
    assert latest(job)["logs"] == "one\n" and WebhookReceipt.objects.count() == 1


@pytest.mark.parametrize(("case", "text"), [("unsigned", "unsigned"), ("stale", "stale"), ("wrong_secret", "wrong"),
                                            ("tampered", "tampered")])
def test_a_delivery_that_is_not_the_accounts_is_refused_and_changes_nothing(config, job, fake_replicate, case, text):
    secret = WRONG_SECRET if case == "wrong_secret" else fake_replicate.webhook_secret
    kwargs = {"headers": case != "unsigned", "timestamp": int(time.time()) - 3600 if case == "stale" else None}
    if case == "tampered":
        # Signed for one body, sent with another.
        raw = json.dumps(training()).encode()
        timestamp = str(int(time.time()))
        response = Client().post(f"/api/webhooks/replicate/{config.uuid}", json.dumps(training("succeeded")),
                                 content_type="application/json", HTTP_WEBHOOK_ID="msg_1",
                                 HTTP_WEBHOOK_TIMESTAMP=timestamp,
                                 HTTP_WEBHOOK_SIGNATURE=sign(secret, "msg_1", timestamp, raw))
    else:
        response = deliver(config, training(), secret, **kwargs)
    assert response.status_code == 401
    assert response.json() == {"detail": "The delivery is not signed by this backend's Replicate account, or is too old."}
    assert latest(job) is None and not WebhookReceipt.objects.exists()


def test_an_outsider_or_a_stranger_gets_nothing_useful(config, job, fake_replicate, outsider, tiny_base_model):
    browser = Client()
    browser.force_login(outsider)
    forged = deliver(config, training("succeeded"), WRONG_SECRET, client=browser)
    anonymous = deliver(config, training("succeeded"), WRONG_SECRET)
    assert forged.status_code == anonymous.status_code == 401 and forged.content == anonymous.content
    for response in (forged, anonymous):
        assert str(job.uuid) not in response.content.decode() and "trainingone" not in response.content.decode()
    from uuid import uuid4

    comfy = BackendConfig.objects.create(team=config.team, name="desk", type="comfyui", base_url="http://127.0.0.1:9")
    for uuid in (uuid4(), comfy.uuid):
        response = Client().post(f"/api/webhooks/replicate/{uuid}", b"{}", content_type="application/json")
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}
    assert Client().get(f"/api/webhooks/replicate/{config.uuid}").status_code == 405
    assert latest(job) is None


def test_a_start_delivery_that_beats_the_recorded_id_finds_its_job_by_the_upload(config, job, fake_replicate):
    ReplicateTraining.objects.filter(job=job).update(training_id="")
    body = training("starting", logs="", training_id="trainingnew")
    assert deliver(config, body, fake_replicate.webhook_secret).json() == {"result": "stored"}
    assert latest(job)["id"] == "trainingnew"


def test_a_late_delivery_does_not_replace_a_newer_one(config, job, fake_replicate):
    secret = fake_replicate.webhook_secret
    deliver(config, training("succeeded", logs="a\nb\nc\n"), secret, webhook_id="msg_2")
    deliver(config, training("processing", logs="a\n"), secret, webhook_id="msg_1")
    assert latest(job)["status"] == "succeeded" and WebhookReceipt.objects.count() == 2


def test_a_delivery_for_a_training_no_job_runs_is_acknowledged_and_ignored(config, job, fake_replicate):
    body = training(training_id="someoneelse", upload="http://upload/other")
    assert deliver(config, body, fake_replicate.webhook_secret).json() == {"result": "ignored"}
    assert latest(job) is None


def test_the_signing_secret_is_fetched_once_and_kept(config, job, fake_replicate):
    for index in range(3):
        assert deliver(config, training(logs="x\n" * (index + 1)), fake_replicate.webhook_secret,
                       webhook_id=f"msg_{index}").status_code == 200
    fetches = [r for r in fake_replicate.requests if r.path == "/v1/webhooks/default/secret"]
    assert len(fetches) == 1 and fetches[0].headers["authorization"] == f"Bearer {fake_replicate.token}"


def test_a_secret_that_cannot_be_fetched_asks_replicate_to_deliver_again(config, job, fake_replicate, monkeypatch):
    monkeypatch.delenv(REPLICATE_TOKEN_ENV)
    response = deliver(config, training(), fake_replicate.webhook_secret)
    assert response.status_code == 503 and latest(job) is None and not WebhookReceipt.objects.exists()


def test_receipts_older_than_any_retry_are_forgotten_by_maintenance(config):
    from datetime import timedelta

    from django.utils import timezone

    from lorasite.core import maintenance

    old = WebhookReceipt.objects.create(backend_config=config, webhook_id="msg_old")
    WebhookReceipt.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=8))
    WebhookReceipt.objects.create(backend_config=config, webhook_id="msg_new")
    (hook,) = [h for h in maintenance.hooks() if h.name == "training.prune_webhook_receipts"]
    assert hook.run() == 1
    assert list(WebhookReceipt.objects.values_list("webhook_id", flat=True)) == ["msg_new"]


# -- end to end: daphne receives, the worker follows -------------------------------------------------
@pytest.mark.services
def test_with_a_site_url_signed_deliveries_feed_the_job_instead_of_polls(stack, token, dataset_a, flux_model,  # noqa: F811
                                                                        fake_replicate):
    fake_replicate.plan_next(TrainingPlan(seconds_per_step=0.05))
    stack.start_worker(SITE_URL=stack.base)
    job = submit(stack, token, dataset_a)
    messages = asyncio.run(watch(stack, token, job["id"], ended, timeout=90))
    assert messages[-1]["status"] == "completed", messages[-3:]
    steps = [m["step"] for m in messages if m["type"] == "progress"]
    assert len({s for s in steps if 0 < s < 40}) >= 3 and steps[-1] == 40
    (trained,) = fake_replicate.trainings.values()
    config = BackendConfig.objects.get(name="repl")
    assert trained.webhook == f"{stack.base}/api/webhooks/replicate/{config.uuid}"
    fake_replicate.sender.drain()
    assert len(fake_replicate.deliveries) >= 5 and {d.status_code for d in fake_replicate.deliveries} == {200}
    # Fed by deliveries: one poll when it started following, one to fetch the weights; the safety
    # poll (every 60 s) never came round.
    polls = [r for r in fake_replicate.requests if r.method == "GET" and r.path == f"/v1/trainings/{trained.id}"]
    assert len(polls) <= 2


@pytest.mark.services
def test_duplicated_deliveries_are_each_handled_once_end_to_end(stack, token, dataset_a, flux_model,  # noqa: F811
                                                               fake_replicate):
    fake_replicate.sender.mode = "duplicated"
    stack.start_worker(SITE_URL=stack.base)
    done = finished(submit(stack, token, dataset_a)["id"])
    assert done.status == JobStatus.COMPLETED, done.error
    fake_replicate.sender.drain()
    ids = [d.webhook_id for d in fake_replicate.deliveries]
    assert len(ids) == 2 * len(set(ids)) and {d.status_code for d in fake_replicate.deliveries} == {200}
    assert WebhookReceipt.objects.count() == len(set(ids))


@pytest.mark.services
@pytest.mark.parametrize("mode", ["unsigned", "stale", "wrong_secret"])
def test_refused_deliveries_leave_the_job_to_the_safety_poll(stack, token, dataset_a, flux_model,  # noqa: F811
                                                            fake_replicate, mode):
    fake_replicate.sender.mode = mode
    configure(webhook_poll_seconds=0.5)
    stack.start_worker(SITE_URL=stack.base)
    done = finished(submit(stack, token, dataset_a)["id"])
    assert done.status == JobStatus.COMPLETED, done.error
    fake_replicate.sender.drain()
    assert fake_replicate.deliveries and {d.status_code for d in fake_replicate.deliveries} == {401}
    assert not WebhookReceipt.objects.exists() and ReplicateTraining.objects.get(job=done).latest is None
