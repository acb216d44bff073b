"""Worker processes check in (so the portal shows who is online) and run periodic maintenance:
the job reaper and reconciler, so lost jobs are found even when nobody runs a command."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

import dramatiq
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

from lorasite.core import maintenance

logger = logging.getLogger(__name__)


_worker_threads: int | None = None


def worker_thread_count() -> int:
    """How many threads this process's Dramatiq worker runs (1 before a worker has booted)."""
    return _worker_threads or 1


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def live_workers(queue: str | None = None) -> list:
    from lorasite.core.models import WorkerNode

    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_CHECKIN_SECONDS * 3)
    workers = list(WorkerNode.objects.filter(last_seen__gte=cutoff))
    return [w for w in workers if queue is None or not w.queues or queue in w.queues]


def check_in(queues: list[str]) -> None:
    from lorasite.core.models import WorkerNode

    now = timezone.now()
    device = os.environ.get("LORASITE_DEVICE") or (
        f"cuda:{os.environ['CUDA_VISIBLE_DEVICES']}" if os.environ.get("CUDA_VISIBLE_DEVICES") else "cpu"
    )
    fields = {"hostname": socket.gethostname(), "queues": sorted(queues), "device": device, "last_seen": now}
    WorkerNode.objects.update_or_create(name=worker_name(), defaults=fields,
                                        create_defaults={**fields, "started_at": now})


def check_out() -> None:
    from lorasite.core.models import WorkerNode

    WorkerNode.objects.filter(name=worker_name()).delete()


def answer_waiting_probes(queues: list[str]) -> int:
    """An embedded worker stamps the unanswered probes of the queues it serves (its broker carries
    no message from another process, so the probe row is the message)."""
    from lorasite.core.models import WorkerProbe

    return WorkerProbe.objects.filter(queue__in=queues, answered_at__isnull=True).update(
        answered_at=timezone.now(), answered_by=f"{worker_name()} (embedded worker)")


def run_maintenance() -> dict[str, object]:
    """Every maintenance hook the apps registered (the job reaper and reconciler, ...)."""
    return maintenance.run_all()


class WorkerPresence(Middleware):
    """Starts a daemon thread in each worker process: check in, then reap and reconcile, periodically."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._embedded = False

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        global _worker_threads
        _worker_threads = getattr(worker, "worker_threads", None)
        chosen = getattr(worker, "consumer_whitelist", None) or broker.get_declared_queues()
        queues = sorted(q for q in chosen if not q.endswith(".DQ"))
        self._stop.clear()
        self._embedded = isinstance(broker, StubBroker)
        self._thread = threading.Thread(target=self._loop, args=(queues,), name="lorasite-presence", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()
        try:
            check_out()
        except Exception:
            logger.warning("could not check out", exc_info=True)

    def _loop(self, queues: list[str]) -> None:
        # Maintenance runs every few seconds, so a lost message is re-sent quickly; check-in is one UPDATE.
        interval = min(settings.WORKER_CHECKIN_SECONDS, settings.JOB_RECONCILE_SECONDS)
        while not self._stop.is_set():
            try:
                close_old_connections()
                check_in(queues)
                if self._embedded:
                    answer_waiting_probes(queues)
                run_maintenance()
            except Exception:
                # Never let maintenance kill the worker; the next round tries again.
                logger.warning("worker maintenance failed", exc_info=True)
            finally:
                close_old_connections()
            self._stop.wait(interval)
