"""What the training app does when a job changes: every listener of the one "job changed" event
and every maintenance hook, registered once from TrainingConfig.ready()."""

from __future__ import annotations

from lorasite import events
from lorasite.core import maintenance
from training_app import dispatch, notifications
from training_app.models import TrainingJob
from training_app.progress import publish_status


def publish_job_status(job: TrainingJob, previous: str) -> None:
    """Websocket `status` message to the job's page and the team's dashboard."""
    publish_status(job)


def register() -> None:
    # Dispatch first: the next job's message matters more than the broadcasts.
    events.listen(events.JOB_CHANGED, dispatch.on_job_changed)
    events.listen(events.JOB_CHANGED, publish_job_status)
    events.listen(events.JOB_CHANGED, notifications.on_job_changed)
    maintenance.register("training.reap_lost_jobs", dispatch.reap_lost_jobs)
    maintenance.register("training.reconcile_queued_jobs", dispatch.reconcile_queued_jobs)
