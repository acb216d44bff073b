"""Helpers for tests that use real services and real subprocesses (workers, daphne)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def require_service(name: str, host: str, port: int) -> None:
    """Fail loudly in CI, skip with the reason elsewhere, when a service is not listening."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(message + "; CI must have it running")
        pytest.skip(message)


def require_redis() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"process exited with {process.returncode} before listening:\n{out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


def database_url() -> str:
    """A DATABASE_URL for the database this test run is using, for subprocesses."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


def production_env(**extra: str) -> dict[str, str]:
    """The environment a production process would get, pointed at this test run's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="lorasite.settings",
        DATABASE_URL=database_url(),
        SECRET_KEY="tests-only-not-secret",
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        LORASITE_VAR_DIR=str(settings.VAR_DIR),
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        # As production should run them (see README): an idle worker polls Redis every 50 ms, not 1 s.
        dramatiq_worker_timeout="50",
    )
    env.pop("LORASITE_BROKER", None)
    env.update(extra)
    return env


def start_process(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stdout.read() if process.stdout else ""


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


@dataclass
class ServedPortal:
    url: str
    log: str = ""  # everything the server printed, once it has stopped


@contextmanager
def serve_portal(env: dict[str, str]) -> Iterator[ServedPortal]:
    """`manage.py serve` (embedded mode: daphne + in-process worker threads) on a free port; stopped on
    exit, its output then in `.log`."""
    port = free_port()
    portal = ServedPortal(f"http://127.0.0.1:{port}")
    process = start_process([sys.executable, "manage.py", "serve", "--port", str(port)], env)
    try:
        wait_for_port(port, process, timeout=60)
        yield portal
    finally:
        portal.log = stop_process(process)


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class RedisStack:
    """Production-mode processes on Redis in a namespace of their own, with a fast reconciler;
    `close()` stops every process it started and empties the namespace."""

    def __init__(self, models_dir: str, **extra: str):
        import redis

        self.redis_url = require_redis()
        self.namespace = f"lorasite-test-{uuid.uuid4().hex[:8]}"
        self.env = production_env(
            REDIS_URL=self.redis_url, DRAMATIQ_NAMESPACE=self.namespace, CHANNEL_LAYER_PREFIX=self.namespace,
            ALLOWED_HOSTS="127.0.0.1", LORASITE_MODELS_DIR=models_dir, WORKER_CHECKIN_SECONDS="1",
            JOB_RECONCILE_SECONDS="1", JOB_RECONCILE_GRACE_SECONDS="1",
            # 300 s is the blind re-send: everything these tests see happens long before it.
            JOB_REDISPATCH_AFTER_SECONDS="300", OMP_NUM_THREADS="1", **extra)
        self.redis = redis.Redis.from_url(self.redis_url)
        self.processes: list[subprocess.Popen] = []

    def start(self, args: list[str], **extra_env: str) -> subprocess.Popen:
        self.processes.append(start_process(args, {**self.env, **extra_env}))
        return self.processes[-1]

    def start_web(self, **extra_env: str) -> int:
        """A daphne serving the portal; returns its port once it listens."""
        port = free_port()
        web = self.start([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"],
                         **extra_env)
        wait_for_port(port, web)
        return port

    def start_worker(self, *queues: str) -> subprocess.Popen:
        return self.start([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                           "--queues", *queues])

    def close(self) -> None:
        for process in reversed(self.processes):
            log = stop_process(process, timeout=15)
            if "Traceback" in log:
                print(log)
        for key in self.redis.scan_iter(f"{self.namespace}:*"):
            self.redis.delete(key)
        self.redis.close()
