"""Lost job messages are found within seconds by a real worker on Redis; workers as shipped poll
quickly; the job page says what a queued job waits for."""

from __future__ import annotations

import time

import dramatiq
import httpx
import pytest

from lorasite.accounts.models import ApiToken
from lorasite.broker import build_broker, get_broker
from lorasite.core.models import WorkerNode
from tests.services import wait_until
from training_app.models import JobStatus, TrainingJob

TINY = {"resolution": 64, "batch_size": 2, "rank": 4, "max_steps": 2}


def _submit(port, token, dataset) -> str:
    response = httpx.post(f"http://127.0.0.1:{port}/api/jobs", headers={"Authorization": f"Bearer {token}"},
                          json={"dataset_id": str(dataset.uuid), "base_model": "tiny-sd15", "config": TINY},
                          timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_message_lost_in_a_broker_restart_is_resent_within_seconds(member, dataset_a, tiny_base_model,
                                                                     redis_stack):
    token = ApiToken.issue(member, "recovery")[1]
    port = redis_stack.start_web()
    client, namespace = redis_stack.redis, redis_stack.namespace
    job_id = _submit(port, token, dataset_a)
    page = httpx.get(f"http://127.0.0.1:{port}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    assert page.json()["waiting_for"] == "waiting for a worker on queue gpu"
    assert wait_until(lambda: client.hlen(f"{namespace}:gpu.msgs") == 1, 10)
    # The broker restarts without persistence: the job's message is gone, the row still says queued.
    for key in client.scan_iter(f"{namespace}:*"):
        client.delete(key)
    redis_stack.start_worker("gpu", "default")
    started = wait_until(lambda: TrainingJob.objects.get(uuid=job_id).status != JobStatus.QUEUED, 60)
    assert started, "the job was never re-sent"
    assert wait_until(lambda: TrainingJob.objects.get(uuid=job_id).status == JobStatus.COMPLETED, 120)
    job = TrainingJob.objects.get(uuid=job_id)
    assert job.attempts == 1


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_messages_waiting_in_redis_are_not_sent_again(member, dataset_a, tiny_base_model, redis_stack):
    """Found by benchmarks/submit_burst.py: jobs that waited in Redis behind a busy worker for longer
    than the grace period were all sent a second time (Redis keys its messages by its own id)."""
    token = ApiToken.issue(member, "recovery")[1]
    port = redis_stack.start_web()
    client, namespace = redis_stack.redis, redis_stack.namespace
    jobs = [_submit(port, token, dataset_a) for _ in range(2)]
    assert wait_until(lambda: client.hlen(f"{namespace}:gpu.msgs") == 2, 10)
    sent = dict(TrainingJob.objects.filter(uuid__in=jobs).values_list("uuid", "dispatch_message_id"))
    # A worker that runs the reconciler but takes nothing from the gpu queue, as when all GPUs are busy.
    redis_stack.start_worker("default")
    assert wait_until(lambda: WorkerNode.objects.filter(queues=["default"]).exists(), 30)
    time.sleep(4)  # four reconciler rounds, each well past the 1 s grace
    assert client.hlen(f"{namespace}:gpu.msgs") == 2
    assert dict(TrainingJob.objects.filter(uuid__in=jobs).values_list("uuid", "dispatch_message_id")) == sent
    assert set(TrainingJob.objects.filter(uuid__in=jobs).values_list("status", flat=True)) == {JobStatus.QUEUED}


@pytest.mark.django_db(transaction=True)
def test_a_worker_started_without_settings_polls_every_50_ms(monkeypatch):
    monkeypatch.delenv("dramatiq_worker_timeout", raising=False)
    worker = dramatiq.Worker(get_broker(), queues={"default"}, worker_threads=1)
    assert worker.worker_timeout == 1000  # dramatiq's own default, before boot
    worker.start()
    try:
        assert worker.worker_timeout == 50
        assert all(consumer.worker_timeout == 50 for consumer in worker.consumers.values())
    finally:
        worker.stop()


@pytest.mark.django_db(transaction=True)
def test_the_poll_interval_can_be_changed(monkeypatch):
    monkeypatch.delenv("dramatiq_worker_timeout", raising=False)
    monkeypatch.setenv("LORASITE_WORKER_POLL_MS", "20")
    worker = dramatiq.Worker(get_broker(), queues={"default"}, worker_threads=1)
    worker.start()
    try:
        assert worker.worker_timeout == 20
    finally:
        worker.stop()
    monkeypatch.setenv("LORASITE_WORKER_POLL_MS", "soon")
    # A bad value stops the process when the broker is set up, before any worker runs.
    with pytest.raises(RuntimeError, match="LORASITE_WORKER_POLL_MS must be a whole number"):
        build_broker("stub")
