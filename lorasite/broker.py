"""Chooses the Dramatiq broker from the environment and offers the on-commit send helper.

Dramatiq binds actors to the global broker when their module is imported, so `setup_broker()` runs in
CoreConfig.ready(), before any app's tasks module is imported.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

QUEUES = ("gpu", "remote", "captioning", "default")
_lock = threading.Lock()
_configured: dramatiq.Broker | None = None


class DjangoConnections(Middleware):
    """Close stale database connections around each message, as Django does around each request."""

    def _close(self) -> None:
        from django.db import close_old_connections

        close_old_connections()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        self._close()

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        self._close()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        self._close()

    def after_worker_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        self._close()

    def before_worker_thread_shutdown(self, broker: dramatiq.Broker, thread: Any) -> None:
        from django.db import connections

        connections.close_all()


def broker_kind() -> str:
    """`stub` (embedded, in-process), `redis` or `rabbitmq`, from LORASITE_BROKER or the URLs."""
    explicit = os.environ.get("LORASITE_BROKER", "").strip().lower()
    if explicit:
        if explicit not in {"stub", "redis", "rabbitmq"}:
            raise RuntimeError(f"LORASITE_BROKER must be stub, redis or rabbitmq, got {explicit!r}")
        return explicit
    if os.environ.get("REDIS_URL"):
        return "redis"
    if os.environ.get("RABBITMQ_URL"):
        return "rabbitmq"
    return "stub"


def build_broker(kind: str | None = None) -> dramatiq.Broker:
    kind = kind or broker_kind()
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        broker: dramatiq.Broker = RedisBroker(url=url, namespace=os.environ.get("DRAMATIQ_NAMESPACE", "dramatiq"))
    elif kind == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=os.environ.get("RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672/")
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    broker.add_middleware(DjangoConnections())
    from lorasite.core.workers import WorkerPresence

    broker.add_middleware(WorkerPresence())
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def setup_broker() -> dramatiq.Broker:
    """Install the broker for this process once; later calls return the same one."""
    global _configured
    with _lock:
        if _configured is None:
            _configured = build_broker()
            dramatiq.set_broker(_configured)
            logger.debug("dramatiq broker: %s", type(_configured).__name__)
        return _configured


def get_broker() -> dramatiq.Broker:
    return _configured or setup_broker()


def send_on_commit(actor: dramatiq.Actor, *args: Any, **kwargs: Any) -> None:
    """Enqueue after the surrounding transaction commits, so the worker sees the rows it is sent for."""
    from django.db import transaction

    transaction.on_commit(lambda: actor.send(*args, **kwargs))


def check_broker() -> tuple[bool, str]:
    """Whether the broker answers; the text says which broker and, on failure, why (no secrets)."""
    broker = get_broker()
    kind = type(broker).__name__
    try:
        if isinstance(broker, StubBroker):
            return True, "embedded"
        client = getattr(broker, "client", None)
        if client is not None:  # Redis
            client.ping()
            return True, "redis"
        # RabbitMQ: opening the channel proves the connection and the credentials.
        broker.channel  # noqa: B018
        return True, "rabbitmq"
    except Exception as exc:  # the health check must report, not raise
        return False, f"{kind} unreachable ({type(exc).__name__})"
