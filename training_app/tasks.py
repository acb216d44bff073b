"""Dramatiq actors for training jobs: `gpu` for the local backend, `remote` for remote backends.

Actors take the job's UUID, never objects. No blind retries: a lost job is found by the reaper
(stale heartbeat) and resumes from its checkpoint; a retryable backend error re-queues the job with
a back-off (runner); the time limit is a last resort. Each backend names its actor by name.
"""

from __future__ import annotations

import dramatiq
from django.conf import settings

from training_app.notifications import deliver
from training_app.runner import execute_job

_TIME_LIMIT_MS = settings.JOB_TIME_LIMIT_HOURS * 3600 * 1000


@dramatiq.actor(queue_name="gpu", max_retries=0, time_limit=_TIME_LIMIT_MS)
def run_local_job(job_uuid: str) -> None:
    execute_job(job_uuid)


@dramatiq.actor(queue_name="remote", max_retries=0, time_limit=_TIME_LIMIT_MS)
def run_remote_job(job_uuid: str) -> None:
    execute_job(job_uuid)


@dramatiq.actor(queue_name="default", max_retries=3, min_backoff=5_000, max_backoff=300_000, time_limit=60_000)
def deliver_job_webhooks(job_uuid: str) -> None:
    deliver(job_uuid)
