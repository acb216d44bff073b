"""Operational records: probes an operator sends to find out which queues have a live worker."""

from __future__ import annotations

import uuid

from django.db import models


class WorkerProbe(models.Model):
    """A message sent to one queue; the worker that consumes it stamps it, proving the queue is served."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    queue = models.CharField(max_length=32)
    sent_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"probe {self.id} on {self.queue}"


class WorkerNode(models.Model):
    """A running worker process; it checks in periodically so the portal can show who is online."""

    name = models.CharField(max_length=200, unique=True, help_text="host:pid")
    hostname = models.CharField(max_length=200)
    queues = models.JSONField(default=list)
    device = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
