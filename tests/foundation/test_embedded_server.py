"""Commands run beside a running embedded server (`manage.py serve` with the in-process broker):
its workers answer `ping_workers` and take jobs that `manage.py train` submits from another process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.services import free_port, production_env, start_process, stop_process, wait_for_port
from training_app.models import JobStatus, TrainingJob

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def embedded_server(settings):
    env = production_env(LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR), OMP_NUM_THREADS="1")
    env.pop("REDIS_URL", None)
    env.pop("RABBITMQ_URL", None)
    port = free_port()
    server = start_process([sys.executable, "manage.py", "serve", "--port", str(port)], env)
    try:
        wait_for_port(port, server)
        yield server, env
    finally:
        log = stop_process(server)
        assert "Traceback" not in log, log


def manage(env, *args, timeout=120):
    return subprocess.run([sys.executable, "manage.py", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_ping_workers_sees_the_embedded_workers_of_a_running_server(embedded_server):
    server, env = embedded_server
    result = manage(env, "ping_workers", "--timeout", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["gpu", "remote", "captioning", "default"]
    for line in lines:
        assert line.endswith(f":{server.pid} (embedded worker)"), line


def test_train_from_another_process_is_taken_by_the_running_server(embedded_server, member, dataset_a,
                                                                   tiny_base_model):
    server, env = embedded_server
    result = manage(env, "train", "--dataset", "shapes", "--team", "alpha", "--user", "mia", "--preset", "fast",
                    "--config", '{"resolution": 64, "max_steps": 5}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert "takes it within a few seconds" in result.stdout
    job = TrainingJob.objects.get()
    assert job.status == JobStatus.COMPLETED and job.attempts == 1
    assert job.worker_id.split(":")[1] == str(server.pid)
    # Picked up by the server's reconciler (seconds), not its five-minute blind re-send.
    assert (job.started_at - job.queued_at).total_seconds() < 30
