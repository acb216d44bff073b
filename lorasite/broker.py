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


class MessageLedger(Middleware):
    """Knows which messages the embedded broker still holds (queued, delayed or being processed),
    so the reconciler can tell a lost job message from a slow one. Only the embedded broker needs
    it: there every producer and consumer share this process."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        with self._lock:
            self._held.add(message.message_id)

    def _done(self, message: dramatiq.Message) -> None:
        with self._lock:
            self._held.discard(message.message_id)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        self._done(message)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        self._done(message)


class QuickPolling(Middleware):
    """An idle Redis consumer polls with a back-off capped by the worker's timeout, 1000 ms in
    dramatiq, which makes a job wait ~400 ms for a worker. Dramatiq reads that default from the
    environment before our code runs, so set it on each worker as it boots:
    LORASITE_WORKER_POLL_MS (default 50), or dramatiq's own `dramatiq_worker_timeout` if set."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if "dramatiq_worker_timeout" in os.environ:
            return
        worker.worker_timeout = poll_milliseconds()


def poll_milliseconds() -> int:
    raw = os.environ.get("LORASITE_WORKER_POLL_MS", "50")
    try:
        value = int(raw)
    except ValueError:
        raise RuntimeError(f"LORASITE_WORKER_POLL_MS must be a whole number of milliseconds, got {raw!r}") from None
    if not 1 <= value <= 60_000:
        raise RuntimeError(f"LORASITE_WORKER_POLL_MS must be between 1 and 60000, got {value}")
    return value


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
    poll_milliseconds()  # a bad LORASITE_WORKER_POLL_MS fails here, loudly, not at each worker boot
    broker.add_middleware(QuickPolling())
    if isinstance(broker, StubBroker):
        broker.add_middleware(MessageLedger())
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


def is_embedded() -> bool:
    """The in-process broker: messages reach only worker threads of this same process."""
    return isinstance(get_broker(), StubBroker)


def start_embedded_worker(queues: tuple[str, ...] = QUEUES, threads: int = 1) -> dramatiq.Worker:
    """Worker threads inside this process, consuming the embedded broker (the demo server, or a
    command that has nobody else to run its job)."""
    worker = dramatiq.Worker(get_broker(), queues=set(queues), worker_threads=threads)
    worker.start()
    return worker


def send_on_commit(actor: dramatiq.Actor, *args: Any, **kwargs: Any) -> None:
    """Enqueue after the surrounding transaction commits, so the worker sees the rows it is sent for."""
    from django.db import transaction

    transaction.on_commit(lambda: actor.send(*args, **kwargs))


def held_message_ids(queue: str) -> set[str] | None:
    """The ids of the messages the broker still holds for `queue` (queued, delayed, or taken but not
    acknowledged), where the broker can tell (Redis, embedded); None where it cannot (RabbitMQ)."""
    broker = get_broker()
    if isinstance(broker, StubBroker):
        ledger = next((m for m in broker.middleware if isinstance(m, MessageLedger)), None)
        return ledger.held() if ledger else None
    client = getattr(broker, "client", None)
    if client is None:
        return None
    namespace = getattr(broker, "namespace", "dramatiq")
    held: set[str] = set()
    try:
        # Redis keeps a message's body in `<ns>:<queue>.msgs` (delayed: `.DQ.msgs`) until it is acked,
        # keyed by an id of its own (`redis_message_id`, new at every enqueue), not by the message's id:
        # the message's id is only inside the body.
        for name in (queue, f"{queue}.DQ"):
            for body in client.hvals(f"{namespace}:{name}.msgs"):
                held.add(dramatiq.Message.decode(body).message_id)
    except Exception:
        logger.warning("could not ask the broker which messages queue %s holds", queue, exc_info=True)
        return None
    return held


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
