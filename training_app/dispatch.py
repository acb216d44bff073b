"""Getting queued jobs to workers: each job is sent once per attempt, after commit, within its
team's limit; jobs whose message or worker was lost are found and recovered (the broker only ever
carries "job X is ready")."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lorasite.broker import get_broker, held_message_ids
from lorasite.core.workers import live_workers
from training_app import lifecycle
from training_app.backends.registry import actor_for
from training_app.models import BackendConfig, JobStatus, TrainingJob

logger = logging.getLogger(__name__)

BUSY = lifecycle.BUSY


def _send(job: TrainingJob) -> None:
    """Mark the job sent for this attempt and enqueue its message once the transaction commits."""
    message = actor_for(job.backend).message(str(job.uuid))
    now = timezone.now()
    delay_ms = int((job.not_before - now).total_seconds() * 1000) if job.not_before and job.not_before > now else 0
    TrainingJob.objects.filter(pk=job.pk).update(dispatched_at=now, dispatch_message_id=message.message_id)
    broker = get_broker()
    transaction.on_commit(lambda: broker.enqueue(message, delay=delay_ms or None))


def dispatch_team(team_id: int) -> int:
    """Send the team's next unsent queued jobs, in priority then submit order, into its free slots.

    A slot is taken by a running job and by a queued job already sent, so calling this any number
    of times sends each job once."""
    with transaction.atomic():
        team = lifecycle.lock_team(team_id)
        jobs = TrainingJob.objects.filter(team=team)
        taken = jobs.filter(Q(status__in=BUSY) | Q(status=JobStatus.QUEUED, dispatched_at__isnull=False)).count()
        free = max(0, team.max_concurrent_jobs - taken)
        if not free:
            return 0
        waiting = jobs.filter(status=JobStatus.QUEUED, dispatched_at__isnull=True).order_by("-priority", "queued_at", "id")
        room: dict[int, int] = {}  # backend config -> jobs it can still take
        sent = 0
        for job in waiting.select_related("backend_config"):
            if sent >= free:
                break
            config = job.backend_config
            if config is not None:
                if config.pk not in room:
                    room[config.pk] = backend_room(config)
                if room[config.pk] <= 0:
                    continue  # that backend is full: a job behind it on another backend may go
                room[config.pk] -= 1
            _send(job)
            sent += 1
    return sent


def backend_room(config: BackendConfig) -> int:
    """How many more jobs the backend may take: its limit less its running and already-sent jobs,
    counted over every team that uses it (a global backend is shared)."""
    lifecycle.lock_backend(config.pk)
    taken = TrainingJob.objects.filter(backend_config=config).filter(
        Q(status__in=BUSY) | Q(status=JobStatus.QUEUED, dispatched_at__isnull=False)).count()
    return config.max_concurrent_jobs - taken


def reconcile_queued_jobs() -> int:
    """Re-send queued jobs whose message is gone, and send jobs that were never sent.

    Where the broker can say whether it still holds a message (Redis, the embedded broker) a lost
    one is found within JOB_RECONCILE_GRACE_SECONDS; elsewhere (RabbitMQ) after
    JOB_REDISPATCH_AFTER_SECONDS."""
    now = timezone.now()
    grace = lifecycle.stale_cutoff(settings.JOB_RECONCILE_GRACE_SECONDS)
    blind = lifecycle.stale_cutoff(settings.JOB_REDISPATCH_AFTER_SECONDS)
    sent = TrainingJob.objects.filter(status=JobStatus.QUEUED, dispatched_at__lt=grace).filter(
        Q(not_before__isnull=True) | Q(not_before__lt=now))
    held_by_queue: dict[str, set[str] | None] = {}  # one look at each queue per round
    for job in sent.only("pk", "backend", "dispatch_message_id", "dispatched_at"):
        queue = actor_for(job.backend).queue_name
        if queue not in held_by_queue:
            held_by_queue[queue] = held_message_ids(queue)
        held = held_by_queue[queue]
        if (held is not None and job.dispatch_message_id in held) or (held is None and job.dispatched_at >= blind):
            continue
        # Conditional: another worker's reconciler, or a claim, may have moved first.
        TrainingJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED, dispatch_message_id=job.dispatch_message_id
                                   ).update(dispatched_at=None, dispatch_message_id="")
        logger.warning("reconciler: the message of job %s is lost; sending it again", job.pk)
    teams = set(TrainingJob.objects.filter(status=JobStatus.QUEUED, dispatched_at__isnull=True)
                .values_list("team_id", flat=True))
    return sum(dispatch_team(team_id) for team_id in teams)


def reap_lost_jobs(stale_after: float | None = None, max_attempts: int | None = None) -> dict[str, int]:
    """Running jobs whose heartbeat is stale: re-queue them to resume, or fail them after the limit."""
    stale_after = settings.JOB_STALE_AFTER_SECONDS if stale_after is None else stale_after
    max_attempts = settings.JOB_MAX_ATTEMPTS if max_attempts is None else max_attempts
    cutoff = lifecycle.stale_cutoff(stale_after)
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    candidates = TrainingJob.objects.filter(status__in=BUSY).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True))
    for job_id in list(candidates.values_list("pk", flat=True)):
        outcome = lifecycle.requeue_lost(job_id, cutoff, max_attempts)
        if outcome is None:
            continue
        key = {"queued": "requeued", "failed": "failed", "cancelled": "cancelled"}[outcome]
        counts[key] += 1
        logger.warning("reaper: job %s lost its worker -> %s", job_id, outcome)
    return counts


def on_job_changed(job: TrainingJob, previous: str) -> None:
    """Listener: a job entered the queue, or left a state that holds one of the team's slots (a
    running job, or a queued one whose message is out) for one that holds none: send what now fits.
    A claim (queued -> running) keeps its slot, so it sends nothing."""
    if job.status == JobStatus.QUEUED or (previous in (JobStatus.QUEUED, *BUSY) and job.status not in BUSY):
        dispatch_team(job.team_id)
        if job.status != JobStatus.QUEUED and job.backend_config_id is not None:
            # A slot of a shared backend freed: other teams' jobs may be waiting for it.
            others = (TrainingJob.objects.filter(backend_config_id=job.backend_config_id, status=JobStatus.QUEUED,
                                                 dispatched_at__isnull=True).exclude(team_id=job.team_id)
                      .values_list("team_id", flat=True).distinct())
            for team_id in list(others):
                dispatch_team(team_id)


def waiting_reason(job: TrainingJob) -> str | None:
    """What a queued job waits for, in words for its page; None when it is not waiting."""
    if job.status != JobStatus.QUEUED:
        return None
    queue = actor_for(job.backend).queue_name
    if job.not_before and job.not_before > timezone.now():
        return f"retrying after an error at {job.not_before:%H:%M:%S} UTC"
    if not live_workers(queue):
        return f"waiting for a worker on queue {queue}"
    if job.dispatched_at is None:
        return "waiting for a free slot of the team"
    return f"sent to queue {queue}; waiting for a worker to take it"
