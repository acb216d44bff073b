"""Getting queued jobs to workers: send on commit, keep each team within its limit, and recover
jobs whose message or worker was lost (the broker only ever carries "job X is ready")."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lorasite.broker import send_on_commit
from training_app import lifecycle
from training_app.models import JobStatus, TrainingJob

logger = logging.getLogger(__name__)


def _actor_for(job: TrainingJob):
    from training_app.backends.registry import get_backend
    from training_app.tasks import run_local_job, run_remote_job

    return run_local_job if get_backend(job.backend).queue == "gpu" else run_remote_job


def send(job: TrainingJob) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(dispatched_at=timezone.now())
    send_on_commit(_actor_for(job), str(job.uuid))


def dispatch_team(team_id: int) -> int:
    """Send the next queued jobs of a team, in priority then submit order, up to its free slots."""
    from lorasite.accounts.models import Team

    with transaction.atomic():
        team = Team.objects.select_for_update().get(pk=team_id)
        busy = TrainingJob.objects.filter(team=team, status__in=[JobStatus.RUNNING, JobStatus.CANCELLING]).count()
        free = max(0, team.max_concurrent_jobs - busy)
        if not free:
            return 0
        waiting = list(TrainingJob.objects.filter(team=team, status=JobStatus.QUEUED)
                       .order_by("-priority", "queued_at", "id")[:free])
        for job in waiting:
            send(job)
    return len(waiting)


def reconcile_queued_jobs() -> int:
    """Re-send queued jobs whose message may have been lost (never sent, or sent long ago)."""
    cutoff = lifecycle.stale_cutoff(settings.JOB_REDISPATCH_AFTER_SECONDS)
    overdue_teams = set(TrainingJob.objects.filter(status=JobStatus.QUEUED)
                        .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=cutoff))
                        .values_list("team_id", flat=True))
    # dispatch_team keeps each team's order and limit: it re-sends from the head of the queue.
    return sum(dispatch_team(team_id) for team_id in overdue_teams)


def reap_lost_jobs(stale_after: float | None = None, max_attempts: int | None = None) -> dict[str, int]:
    """Running jobs whose heartbeat is stale: re-queue them to resume, or fail them after the limit."""
    stale_after = settings.JOB_STALE_AFTER_SECONDS if stale_after is None else stale_after
    max_attempts = settings.JOB_MAX_ATTEMPTS if max_attempts is None else max_attempts
    cutoff = lifecycle.stale_cutoff(stale_after)
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    candidates = TrainingJob.objects.filter(status__in=[JobStatus.RUNNING, JobStatus.CANCELLING]).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
    for job_id, team_id in list(candidates.values_list("pk", "team_id")):
        outcome = lifecycle.requeue_lost(job_id, cutoff, max_attempts)
        if outcome is None:
            continue
        key = {"queued": "requeued", "failed": "failed", "cancelled": "cancelled"}[outcome]
        counts[key] += 1
        logger.warning("reaper: job %s lost its worker -> %s", job_id, outcome)
        dispatch_team(team_id)
    return counts
