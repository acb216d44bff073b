"""Runs one job on this worker: claim it, run its backend with a reporter, record the outcome.

Idempotent: a second delivery of a job that is no longer queued does nothing. Cancellation is
cooperative (the reporter tells the trainer to stop at its next step), never an interrupt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from django.conf import settings
from django.db import connection

from training_app import lifecycle
from training_app.backends.base import BackendError, JobTakenOver
from training_app.backends.registry import backend_for_job
from training_app.models import TrainingJob
from training_app.reporting import JobReporter

logger = logging.getLogger(__name__)


def this_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class _Heartbeat(threading.Thread):
    """Keeps the job's heartbeat fresh even while a step (or model loading) takes long."""

    def __init__(self, job_id: int, worker_id: str):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.job_id, self.worker_id = job_id, worker_id
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(settings.JOB_HEARTBEAT_SECONDS):
                if not lifecycle.heartbeat(self.job_id, self.worker_id):
                    return
        finally:
            connection.close()


def execute_job(job_uuid: str, worker_id: str | None = None) -> str | None:
    """Run the job if it is still queued; returns its final status, or None if it was not ours."""
    worker_id = worker_id or this_worker_id()
    try:
        job_pk = TrainingJob.objects.values_list("pk", flat=True).get(uuid=uuid.UUID(str(job_uuid)))
    except (TrainingJob.DoesNotExist, ValueError):
        logger.info("job %s no longer exists; nothing to do", job_uuid)
        return None
    job = lifecycle.claim(job_pk, worker_id)
    if job is None:
        return None
    heartbeat = _Heartbeat(job.pk, worker_id)
    heartbeat.start()
    reporter = JobReporter(job, worker_id)
    try:
        outcome = backend_for_job(job).run(job, reporter)
        reporter.finish()
        reporter.record_lora_files(outcome.steps_completed, outcome.lora_files)
        if outcome.stopped:
            final = lifecycle.finish_cancel(job.pk)
        else:
            final = lifecycle.complete(job.pk, step=job.step, total_steps=job.total_steps,
                                       cost_usd=outcome.metadata.get("cost_usd"))
        if final is None:
            # The reaper gave the job to another worker while this one was finishing: let it be.
            return None
        return final.status
    except JobTakenOver:
        # The reaper gave the job to another worker, which follows the same remote run: leave it be.
        logger.warning("job %s was taken over by another worker; this one stops", job.uuid)
        return None
    except BackendError as exc:
        _flush_quietly(reporter)
        if exc.retryable:
            # The listener sends it again once its back-off has passed; failed after the attempt limit.
            final = lifecycle.requeue_after_error(job.pk, exc.message, settings.JOB_MAX_ATTEMPTS,
                                                  settings.JOB_RETRY_BACKOFF_SECONDS, exc.retry_after)
        else:
            final = lifecycle.fail(job.pk, exc.message)
        return final.status if final else None
    except Exception as exc:
        # Outermost edge: record the failure on the job; details stay in the worker's log.
        reference = uuid.uuid4().hex[:8]
        logger.exception("job %s failed (reference %s)", job.uuid, reference)
        _flush_quietly(reporter)
        final = lifecycle.fail(job.pk, f"The training run failed unexpectedly ({type(exc).__name__}, "
                                       f"reference {reference}). An operator can find the details in the worker log.")
        return final.status if final else None
    finally:
        # The lifecycle's job-changed event sends the team's next job: nothing to do here.
        heartbeat.done.set()


def _flush_quietly(reporter: JobReporter) -> None:
    try:
        reporter.finish()
    except Exception:
        logger.warning("could not write the last progress of job %s", reporter.job.uuid, exc_info=True)
