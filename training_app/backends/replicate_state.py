"""What the portal remembers of a job's Replicate training between workers, and what webhooks delivered.

One `ReplicateTraining` row per job: the upload the training is created with (its tag: Replicate
trainings carry no metadata of ours, but each job's upload URL is its own), the training id once
known, the newest training JSON a webhook delivered, and how far the job's log has read the
training's logs. Workers write the first, second and fourth; the webhook endpoint the third.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from training_app.backends.base import JobTakenOver
from training_app.models import JobStatus, ReplicateTraining, TrainingJob

# Replicate keeps an uploaded file ~24 h; a retry within this reuses the job's upload (and its tag).
UPLOAD_REUSE = timedelta(hours=12)
TERMINAL = ("succeeded", "failed", "canceled")


def get(job: TrainingJob) -> ReplicateTraining | None:
    return ReplicateTraining.objects.filter(job_id=job.pk).first()


def reusable_upload(job: TrainingJob) -> str | None:
    """The upload of an earlier attempt that never got as far as a known training, while it lives."""
    row = get(job)
    if row is None or not row.input_images or row.training_id or row.uploaded_at is None:
        return None
    return row.input_images if timezone.now() - row.uploaded_at < UPLOAD_REUSE else None


def pending_tag(job: TrainingJob) -> str | None:
    """The upload URL to look a training up by, when this job may have started one whose id it never
    learnt (a create call that timed out, a worker killed before it stored the id). None after a retry:
    the old training's id was known, so its tag belongs to a finished run."""
    row = get(job)
    return row.input_images if row is not None and row.input_images and not row.training_id else None


def remember_upload(job: TrainingJob, worker_id: str, url: str) -> None:
    """Commit the job's tag before the training is created, while this worker still owns the job."""
    with transaction.atomic():
        owned = TrainingJob.objects.select_for_update().filter(
            pk=job.pk, worker_id=worker_id, status__in=(JobStatus.RUNNING, JobStatus.CANCELLING)).exists()
        if not owned:
            raise JobTakenOver(f"job {job.uuid} is no longer this worker's")
        ReplicateTraining.objects.update_or_create(job_id=job.pk, defaults={
            "input_images": url, "uploaded_at": timezone.now(), "training_id": "", "latest": None,
            "latest_at": None, "log_cursor": 0})


def attach(job: TrainingJob, training_id: str) -> int:
    """Note which training the job follows; returns how much of its logs the job's log already has."""
    row, _ = ReplicateTraining.objects.get_or_create(job_id=job.pk)
    if row.training_id != training_id:
        # Another training than the one the cursor and snapshot were about (a retried job).
        if row.latest and row.latest.get("id") != training_id:
            row.latest, row.latest_at = None, None
        row.training_id, row.log_cursor = training_id, 0
        row.save(update_fields=["training_id", "log_cursor", "latest", "latest_at"])
    return row.log_cursor


def save_cursor(job: TrainingJob, cursor: int) -> None:
    ReplicateTraining.objects.filter(job_id=job.pk).update(log_cursor=cursor)


def delivered_since(job: TrainingJob, after: datetime | None) -> tuple[dict[str, Any] | None, datetime | None]:
    """The newest webhook body for the job's training if it arrived after `after`, and when it arrived."""
    rows = ReplicateTraining.objects.filter(job_id=job.pk, latest__isnull=False)
    if after is not None:
        rows = rows.filter(latest_at__gt=after)
    row = rows.values("latest", "latest_at").first()
    return (row["latest"], row["latest_at"]) if row else (None, None)


def _rank(body: dict[str, Any] | None) -> tuple[bool, int]:
    # Deliveries can arrive out of order: a final status always wins, then the longer logs.
    if not body:
        return (False, -1)
    return (body.get("status") in TERMINAL, len(body.get("logs") or ""))


def store_delivery(config_id: int, body: dict[str, Any]) -> bool:
    """Keep a webhook's training JSON on the job it belongs to (found by training id, or by its upload
    when the `start` delivery beats the worker's record of the id). False: no job of this backend has it."""
    training_id = str(body.get("id") or "")
    upload = str((body.get("input") or {}).get("input_images") or "")
    rows = ReplicateTraining.objects.select_for_update().filter(job__backend_config_id=config_id)
    with transaction.atomic():
        row = rows.filter(training_id=training_id).first() if training_id else None
        if row is None and upload:
            row = rows.filter(input_images=upload, training_id="").first()
        if row is None:
            return False
        if _rank(body) >= _rank(row.latest) or (row.latest or {}).get("id") != training_id:
            row.latest, row.latest_at = body, timezone.now()
            row.save(update_fields=["latest", "latest_at"])
    return True
