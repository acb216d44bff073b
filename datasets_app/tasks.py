"""Dramatiq actors for datasets: auto-captioning on the `captioning` queue.

The actor takes the run's UUID; it is idempotent (claim first, skip images already done) and has
no blind retries: a worker that dies mid-run is noticed by its stale heartbeat and the run is
re-sent (see caption_lifecycle.claim and resume_stale_runs)."""

from __future__ import annotations

import dramatiq

from datasets_app.caption_runner import execute_run

_TIME_LIMIT_MS = 24 * 3600 * 1000


@dramatiq.actor(queue_name="captioning", max_retries=0, time_limit=_TIME_LIMIT_MS)
def caption_run_actor(run_uuid: str) -> None:
    execute_run(run_uuid)
