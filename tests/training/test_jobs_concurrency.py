"""Jobs under concurrent load: every submit creates exactly one job or nothing, never a 500; each
job is sent to the broker once per attempt; a retried request with an Idempotency-Key gets the first job."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test import Client

from lorasite.accounts.models import ApiToken
from lorasite.broker import get_broker
from training_app import dispatch, lifecycle
from training_app.models import JobStatus, TrainingJob

SMALL = {"resolution": 64, "max_steps": 2}


def _post_job(token, dataset_id, results, barrier, key=None):
    client = Client(raise_request_exception=False)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if key:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    try:
        barrier.wait()
        response = client.post("/api/jobs", {"dataset_id": str(dataset_id), "base_model": "tiny-sd15",
                                             "preset": "fast", "config": SMALL},
                               content_type="application/json", **headers)
        results.append((response.status_code, response.json().get("id") if response.status_code < 500 else None))
    finally:
        connections.close_all()


def _claim_loop(stop, claimed, worker):
    """What workers do meanwhile: claim every queued job they see, then let it finish."""
    try:
        while not stop.is_set():
            for pk in TrainingJob.objects.filter(status=JobStatus.QUEUED).values_list("pk", flat=True):
                job = lifecycle.claim(pk, worker)
                if job is not None:
                    claimed.append(pk)
                    lifecycle.complete(pk)
    finally:
        connections.close_all()


def _queue_size(name):
    return get_broker().queues[name].qsize()


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_submits_while_workers_claim_never_500(member, dataset_a, tiny_base_model):
    if connection.vendor != "postgresql":
        pytest.skip("row-lock conflicts are a Postgres matter")
    team = dataset_a.team
    team.max_concurrent_jobs = 1
    team.save()
    token = ApiToken.issue(member, "burst")[1]
    results: list = []
    barrier = threading.Barrier(20)
    stop, claimed = threading.Event(), []
    workers = [threading.Thread(target=_claim_loop, args=(stop, claimed, f"w{i}")) for i in range(3)]
    for w in workers:
        w.start()
    threads = [threading.Thread(target=_post_job, args=(token, dataset_a.uuid, results, barrier)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    for w in workers:
        w.join(30)
    codes = sorted(code for code, _ in results)
    assert codes == [201] * 20, codes
    created = set(TrainingJob.objects.values_list("uuid", flat=True))
    assert {str(u) for u in created} == {job_id for _, job_id in results}
    assert len(created) == 20


@pytest.mark.django_db(transaction=True)
def test_each_queued_job_is_sent_once(member, dataset_a, tiny_base_model, api_for):
    team = dataset_a.team
    team.max_concurrent_jobs = 1
    team.save()
    broker = get_broker()
    broker.flush_all()
    api = api_for(member)
    first = api.post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                   "preset": "fast", "config": SMALL}).json()
    second = api.post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                    "preset": "fast", "config": SMALL}).json()
    # Only the head fits the team's one slot: one message, however many submits happened.
    assert _queue_size("gpu") == 1
    dispatch.dispatch_team(team.pk)
    assert _queue_size("gpu") == 1
    broker.flush_all()
    job = lifecycle.claim(TrainingJob.objects.get(uuid=first["id"]).pk, "w")
    assert job is not None
    lifecycle.complete(job.pk)
    # The finish freed the slot: the second job is sent, once.
    assert _queue_size("gpu") == 1
    dispatch.dispatch_team(team.pk)
    assert _queue_size("gpu") == 1
    assert TrainingJob.objects.get(uuid=second["id"]).status == JobStatus.QUEUED


@pytest.mark.django_db(transaction=True)
def test_idempotency_key_returns_the_first_job(member, dataset_a, tiny_base_model, api_for):
    api = api_for(member)
    body = {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15", "preset": "fast", "config": SMALL}
    first = api.post("/api/jobs", body, HTTP_IDEMPOTENCY_KEY="abc-123")
    again = api.post("/api/jobs", body, HTTP_IDEMPOTENCY_KEY="abc-123")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert TrainingJob.objects.count() == 1
    other = api.post("/api/jobs", body, HTTP_IDEMPOTENCY_KEY="abc-124")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_idempotency_key_make_one_job(member, dataset_a, tiny_base_model):
    token = ApiToken.issue(member, "burst")[1]
    results: list = []
    barrier = threading.Barrier(8)
    threads = [threading.Thread(target=_post_job, args=(token, dataset_a.uuid, results, barrier, "same-key"))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(code in (200, 201) for code, _ in results), results
    assert len({job_id for _, job_id in results}) == 1
    assert TrainingJob.objects.count() == 1


def test_idempotency_key_is_validated(member, dataset_a, tiny_base_model, api_for, db):
    body = {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15", "preset": "fast", "config": SMALL}
    response = api_for(member).post("/api/jobs", body, HTTP_IDEMPOTENCY_KEY="x" * 201)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_cancelling_the_sent_head_of_the_queue_sends_the_next_job_at_once(member, dataset_a, tiny_base_model,
                                                                          api_for):
    team = dataset_a.team
    team.max_concurrent_jobs = 1
    team.save()
    api = api_for(member)
    body = {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15", "preset": "fast", "config": SMALL}
    head, second = api.post("/api/jobs", body).json(), api.post("/api/jobs", body).json()
    assert TrainingJob.objects.get(uuid=second["id"]).dispatched_at is None
    # The head's message holds the team's one slot until a worker takes it; cancelling frees the slot.
    assert api.post(f"/api/jobs/{head['id']}/cancel").status_code == 200
    assert TrainingJob.objects.get(uuid=second["id"]).dispatched_at is not None
