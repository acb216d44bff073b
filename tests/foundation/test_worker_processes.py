"""Real `dramatiq` worker processes on the Redis and RabbitMQ brokers act on the shared database."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from lorasite.core.models import WorkerProbe
from lorasite.core.tasks import answer_probe
from tests.services import (
    RABBITMQ_URL,
    bin_path,
    production_env,
    require_redis,
    require_service,
    start_process,
    stop_process,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def wait_answered(probe_id, timeout=30.0) -> WorkerProbe:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = WorkerProbe.objects.get(id=probe_id)
        if probe.answered_at is not None:
            return probe
        time.sleep(0.1)
    raise AssertionError("no worker answered the probe")


def start_worker(env, queues=("default",)):
    return start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "2",
                          "--queues", *queues], env)


def test_redis_worker_process_runs_an_actor_and_writes_the_database(monkeypatch):
    redis_url = require_redis()
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-test-{uuid.uuid4().hex[:8]}")
    worker = start_worker(env)
    try:
        for name in ("REDIS_URL", "DRAMATIQ_NAMESPACE"):
            monkeypatch.setenv(name, env[name])
        from lorasite.broker import build_broker

        broker = build_broker("redis")
        probe = WorkerProbe.objects.create(queue="default")
        broker.enqueue(answer_probe.message(str(probe.id)))
        answered = wait_answered(probe.id)
        assert answered.answered_by and answered.answered_by.split(":")[-1].isdigit()
    finally:
        log = stop_process(worker)
    assert "Traceback" not in log, log


def test_ping_workers_command_reports_served_and_unserved_queues():
    redis_url = require_redis()
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-test-{uuid.uuid4().hex[:8]}")
    worker = start_worker(env, queues=("default", "captioning"))
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "ping_workers", "--queue", "default", "--queue", "captioning",
             "--queue", "gpu", "--timeout", "8"],
            env=env, capture_output=True, text=True, timeout=60,
        )
    finally:
        stop_process(worker)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("default: answered by")
    assert lines[1].startswith("captioning: answered by")
    assert lines[2] == "gpu: no answer"
    assert result.returncode != 0 and "some queues have no worker answering" in result.stderr


def test_rabbitmq_worker_process_runs_an_actor(monkeypatch):
    require_service("RabbitMQ", "127.0.0.1", 5672)
    env = production_env(RABBITMQ_URL=RABBITMQ_URL)
    worker = start_worker(env)
    try:
        monkeypatch.setenv("RABBITMQ_URL", RABBITMQ_URL)
        from lorasite.broker import build_broker

        broker = build_broker("rabbitmq")
        probe = WorkerProbe.objects.create(queue="default")
        broker.enqueue(answer_probe.message(str(probe.id)))
        assert wait_answered(probe.id).answered_at is not None
        broker.close()
    finally:
        stop_process(worker)
