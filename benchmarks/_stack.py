"""Shared plumbing for the benchmarks that run the production stack (dispatch.py, ws_fanout.py).

`Stack` gives a run its own throwaway Postgres database (created on the `postgres` database, migrated
with `manage.py migrate`, dropped at the end), its own Redis namespace for the Dramatiq broker and the
channel layer (keys deleted at the end), a temporary MEDIA_ROOT/var folder, and subprocesses that are
stopped whatever happens (exceptions, Ctrl-C, SIGTERM). Nothing here touches another run's data.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The admin connection creates and drops the throwaway database; override for another server.
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", f"postgresql://{getpass.getuser()}@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


class Stack(contextlib.ExitStack):
    """Everything one benchmark run owns; use as `with Stack("dispatch") as stack:`."""

    def __init__(self, name: str):
        super().__init__()
        self.tag = uuid.uuid4().hex[:10]
        self.db_name = f"lorasite_bench_{self.tag}"
        self.namespace = f"lorasite-bench-{name}-{self.tag}"
        self.work = Path(tempfile.mkdtemp(prefix=f"lorasite-bench-{name}-"))
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.env: dict[str, str] = {}

    def __enter__(self) -> Stack:
        super().__enter__()
        self.callback(shutil.rmtree, self.work, ignore_errors=True)
        previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        self.callback(signal.signal, signal.SIGTERM, previous)
        try:
            self._create_database()
            self.callback(self._cleanup_redis)
            self.env = self._production_env()
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                           env=self.env, check=True, capture_output=True, text=True, timeout=300)
        except BaseException:
            self.close()
            raise
        return self

    # -- database and redis ----------------------------------------------------------------------
    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.callback(self._drop_database)

    def _drop_database(self) -> None:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
            for conn in connections.all(initialized_only=True):
                if getattr(conn, "close_pool", None):
                    conn.close_pool()  # production settings pool connections: hand them all back
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _cleanup_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{self.namespace}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def database_url(self) -> str:
        admin = PG_ADMIN_URL.rsplit("/", 1)[0]
        return f"{admin}/{self.db_name}"

    def _production_env(self) -> dict[str, str]:
        """What a production process gets (see README "Run modes"), pointed at this run's resources."""
        dropped = {"LORASITE_BROKER", "RABBITMQ_URL"}
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST", "DJANGO_", "dramatiq_")) and k not in dropped}
        env.update(
            DJANGO_SETTINGS_MODULE="lorasite.settings",
            DATABASE_URL=self.database_url(),
            SECRET_KEY="benchmarks-only-not-secret",
            REDIS_URL=REDIS_URL,
            DRAMATIQ_NAMESPACE=self.namespace,
            CHANNEL_LAYER_PREFIX=self.namespace,
            ALLOWED_HOSTS="127.0.0.1,localhost",
            MEDIA_ROOT=str(self.work / "media"),
            LORASITE_VAR_DIR=str(self.work / "var"),
            LORASITE_MODELS_DIR=str(self.work / "models"),
            PYTHONPATH=str(ROOT),
            HF_HUB_OFFLINE="1",
            OMP_NUM_THREADS="1",
        )
        return env

    def setup_django(self) -> None:
        """Make this process a production-mode Django process on the same database and Redis."""
        for key in [k for k in os.environ if k.startswith("dramatiq_")]:
            del os.environ[key]
        os.environ.pop("LORASITE_BROKER", None)
        os.environ.update(self.env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()

    # -- subprocesses ----------------------------------------------------------------------------
    def start(self, name: str, args: list[str], **extra_env: str) -> subprocess.Popen:
        """Start a subprocess in its own session, logging to a file; it is stopped on exit."""
        log = open(self.work / f"{name}.log", "w")  # closed by the exit stack
        self.callback(log.close)
        process = subprocess.Popen(args, cwd=ROOT, env={**self.env, **extra_env}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append((name, process))
        self.callback(self.stop, process)
        return process

    def stop(self, process: subprocess.Popen, timeout: float = 15.0) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: only what it started
                process.wait()

    def log_text(self, name: str) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, name: str, lines: int = 40) -> str:
        return "\n".join(self.log_text(name).splitlines()[-lines:])

    def wait_for_port(self, port: int, process: subprocess.Popen, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"{name} did not listen on {port} within {timeout}s:\n{self.log_tail(name)}")
