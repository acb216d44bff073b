"""Actors that belong to the platform rather than to an app."""

from __future__ import annotations

import os
import socket

import dramatiq
from django.utils import timezone

from lorasite.broker import QUEUES, get_broker, is_embedded


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=30_000)
def answer_probe(probe_id: str) -> None:
    from lorasite.core.models import WorkerProbe

    # Conditional UPDATE: a redelivered probe keeps the first answer.
    WorkerProbe.objects.filter(id=probe_id, answered_at__isnull=True).update(
        answered_at=timezone.now(), answered_by=f"{socket.gethostname()}:{os.getpid()}"
    )


def send_probe(queue: str) -> str:
    """Create a probe for `queue` and enqueue it there; returns the probe id."""
    from lorasite.core.models import WorkerProbe

    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; queues are {', '.join(QUEUES)}")
    probe = WorkerProbe.objects.create(queue=queue)
    if is_embedded():
        # The in-process broker reaches no other process: embedded workers answer the probe row
        # itself from their presence loop (workers.answer_waiting_probes).
        return str(probe.id)
    message = answer_probe.message(str(probe.id)).copy(queue_name=queue)
    get_broker().enqueue(message)
    return str(probe.id)

