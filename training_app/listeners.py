"""What the training app does when a job changes: every listener of the one "job changed" event
and every maintenance hook, registered once from TrainingConfig.ready()."""

from __future__ import annotations

from lorasite import events
from lorasite.accounts.consumers import register_snapshot_part
from lorasite.accounts.models import Team
from lorasite.core import maintenance
from training_app import dispatch, notifications
from training_app.backends import replicate_hooks
from training_app.models import ACTIVE_STATUSES, TrainingJob
from training_app.reporting import progress_payload, publish_status


def publish_job_status(job: TrainingJob, previous: str) -> None:
    """Websocket `status` message to the job's page and the team's dashboard."""
    publish_status(job)


def active_jobs(team: Team) -> list[dict]:
    """The dashboard socket's snapshot: the team's queued and running jobs with their progress."""
    jobs = TrainingJob.objects.filter(team=team, status__in=ACTIVE_STATUSES).order_by("-created_at")[:100]
    return [{**progress_payload(job), "type": "job", "name": job.name, "status": job.status} for job in jobs]


def register() -> None:
    # Dispatch first: the next job's message matters more than the broadcasts.
    events.listen(events.JOB_CHANGED, dispatch.on_job_changed)
    events.listen(events.JOB_CHANGED, publish_job_status)
    events.listen(events.JOB_CHANGED, notifications.on_job_changed)
    register_snapshot_part("jobs", active_jobs)
    maintenance.register("training.reap_lost_jobs", dispatch.reap_lost_jobs)
    maintenance.register("training.reconcile_queued_jobs", dispatch.reconcile_queued_jobs)
    maintenance.register("training.prune_webhook_receipts", replicate_hooks.prune_receipts)
