"""The event hub: a module emits a named event after its transaction commits; listeners that apps
register in their AppConfig.ready() react to it. Platform code imports no app, and no module repeats
another's follow-up work (a status broadcast, a webhook, "send the team's next job")."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)

JOB_CHANGED = "job.changed"
CAPTION_RUN_CHANGED = "caption_run.changed"

Listener = Callable[..., None]
_listeners: dict[str, list[Listener]] = defaultdict(list)


def listen(event: str, listener: Listener) -> None:
    """Register `listener(**payload)` for `event`; registering the same function twice is a no-op."""
    if listener not in _listeners[event]:
        _listeners[event].append(listener)


def listeners(event: str) -> list[Listener]:
    return list(_listeners[event])


def emit(event: str, **payload: Any) -> None:
    """Call every listener once the surrounding transaction commits (at once outside one).

    A listener that fails is logged and skipped: what already committed stays committed, the
    request that caused it still succeeds, and the next listener still runs."""
    transaction.on_commit(lambda: _deliver(event, payload))


def _deliver(event: str, payload: dict[str, Any]) -> None:
    for listener in listeners(event):
        try:
            listener(**payload)
        except Exception:
            logger.exception("listener %s of %s failed", getattr(listener, "__qualname__", listener), event)
