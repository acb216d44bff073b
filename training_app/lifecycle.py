"""Every status change of a TrainingJob happens here, under `select_for_update`.

    queued → running → completed | failed | cancelled, with `cancelling` while a stop is in flight.
    running/cancelling → queued when the reaper re-queues a job whose worker died (it resumes).
    failed/cancelled → queued on retry.

An illegal transition raises `IllegalTransition`; callers that race (two deliveries of the same
message, a cancel against a finish) get a clean answer instead of a corrupted row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from lorasite import events
from lorasite.accounts.models import Team
from lorasite.errors import Conflict
from training_app.models import BackendConfig, JobStatus, TrainingJob

S = JobStatus
BUSY = (S.RUNNING, S.CANCELLING)  # the states that hold one of the team's slots while a worker runs the job

TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLING, S.QUEUED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.FAILED, S.COMPLETED, S.QUEUED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
}


class IllegalTransition(Conflict):
    def __init__(self, job: TrainingJob, to: str):
        super().__init__(f"A {job.status} job cannot become {to}.")
        self.from_status = job.status
        self.to_status = to


def can_transition(current: str, to: str) -> bool:
    return to in TRANSITIONS[current]


def _transition(job_id: int, to: str, mutate: Callable[[TrainingJob], None] | None = None,
                expect: tuple[str, ...] | None = None) -> TrainingJob | None:
    """Lock the row, check the move, apply it. With `expect`, a job in another state is left alone
    and None is returned (the idempotent path for workers); without it, an illegal move raises."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if expect is not None and job.status not in expect:
            return None
        if not can_transition(job.status, to):
            raise IllegalTransition(job, to)
        previous = job.status
        job.status = to
        if to == S.QUEUED:
            _new_attempt(job)
        if mutate is not None:
            mutate(job)
        job.save()
        _announce(job, previous)
    return job


def _new_attempt(job: TrainingJob) -> None:
    """Back in the queue: the next dispatch sends it again (once), to any worker."""
    job.queued_at = timezone.now()
    job.dispatched_at = None
    job.dispatch_message_id = ""
    job.worker_id = ""
    job.not_before = None


def _announce(job: TrainingJob, previous: str) -> None:
    """The one "job changed" event, delivered after commit to the listeners apps registered."""
    events.emit(events.JOB_CHANGED, job=job, previous=previous)


def submit(job: TrainingJob) -> TrainingJob:
    """A freshly created job enters the queue (status queued is its initial state)."""
    job.queued_at = timezone.now()
    job.save(update_fields=["queued_at"])
    _announce(job, "")
    return job


def claim(job_id: int, worker_id: str) -> TrainingJob | None:
    """queued → running for this worker, if the job is still queued and its team has a free slot.

    Returns None when someone else has it, it was cancelled, or the team is at its limit (the job
    then stays queued and is sent again when a slot frees)."""
    team_id = TrainingJob.objects.filter(pk=job_id).values_list("team_id", flat=True).first()
    if team_id is None:
        return None
    with transaction.atomic():
        # Team row first, then the job: every path that takes both locks takes them in this order, so
        # a claim and a dispatch never deadlock. NO KEY UPDATE does not block the KEY SHARE lock that
        # inserting a job (its foreign key to the team) takes, so submits never wait on it.
        team = lock_team(team_id)
        job = TrainingJob.objects.select_for_update().select_related("team").get(pk=job_id)
        if job.status != S.QUEUED:
            return None
        running = TrainingJob.objects.filter(team=team, status__in=BUSY).count()
        if running >= team.max_concurrent_jobs or not _backend_has_room(job):
            # Its message is spent: the next free slot sends it again.
            TrainingJob.objects.filter(pk=job.pk).update(dispatched_at=None, dispatch_message_id="")
            return None
        previous = job.status
        now = timezone.now()
        job.status = S.RUNNING
        job.worker_id = worker_id
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.attempts += 1
        job.error = ""
        job.save()
        _announce(job, previous)
    return job


def _backend_has_room(job: TrainingJob) -> bool:
    if job.backend_config_id is None:
        return True
    lock_backend(job.backend_config_id)
    limit = BackendConfig.objects.filter(pk=job.backend_config_id).values_list("max_concurrent_jobs", flat=True).first()
    busy = TrainingJob.objects.filter(backend_config_id=job.backend_config_id, status__in=BUSY).count()
    return limit is None or busy < limit


def lock_team(team_id: int) -> Team:
    return Team.objects.select_for_update(no_key=True).get(pk=team_id)


def lock_backend(config_id: int) -> None:
    """Taken after the team's lock and before a job's, like every path that takes several."""
    BackendConfig.objects.select_for_update(no_key=True).filter(pk=config_id).first()


def complete(job_id: int, **fields: Any) -> TrainingJob | None:
    def mutate(job: TrainingJob) -> None:
        for name, value in fields.items():
            setattr(job, name, value)
        job.finished_at = timezone.now()
        job.eta_seconds = 0
        job.step = max(job.step, job.total_steps) if job.total_steps else job.step

    # A job cancelled at the very end still produced its files: completed wins over cancelling.
    return _transition(job_id, S.COMPLETED, mutate, expect=(S.RUNNING, S.CANCELLING))


def fail(job_id: int, error: str) -> TrainingJob | None:
    def mutate(job: TrainingJob) -> None:
        job.error = error[:5000]
        job.finished_at = timezone.now()
        job.eta_seconds = None

    return _transition(job_id, S.FAILED, mutate, expect=(S.QUEUED, S.RUNNING, S.CANCELLING))


def request_cancel(job_id: int) -> TrainingJob:
    """A queued job is cancelled at once; a running one becomes cancelling until its worker stops."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        previous = job.status
        if job.status == S.QUEUED:
            job.status = S.CANCELLED
            job.finished_at = timezone.now()
        elif job.status == S.RUNNING:
            job.status = S.CANCELLING
        elif job.status == S.CANCELLING:
            return job
        else:
            raise IllegalTransition(job, S.CANCELLED)
        job.save()
        _announce(job, previous)
    return job


def finish_cancel(job_id: int) -> TrainingJob | None:
    def mutate(job: TrainingJob) -> None:
        job.finished_at = timezone.now()
        job.eta_seconds = None

    return _transition(job_id, S.CANCELLED, mutate, expect=(S.CANCELLING, S.RUNNING))


def retry(job_id: int) -> TrainingJob:
    """A failed or cancelled job goes back to the queue; it resumes from its last checkpoint."""
    def mutate(job: TrainingJob) -> None:
        job.finished_at = None
        job.error = ""
        job.attempts = 0
        job.requested_actions = []
        # A retry is a new run: a remote run that failed or was cancelled is not re-attached to.
        job.remote_id = ""

    job = _transition(job_id, S.QUEUED, mutate)
    assert job is not None
    return job


def requeue_lost(job_id: int, stale_before, max_attempts: int) -> str | None:
    """The reaper's move for a running job whose heartbeat is older than `stale_before`:
    back to the queue (resume from checkpoint) while attempts remain, otherwise failed.
    Returns the new status, or None if the job was not stale after all (it raced a heartbeat)."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.status not in (S.RUNNING, S.CANCELLING) or (job.heartbeat_at and job.heartbeat_at >= stale_before):
            return None
        previous = job.status
        lost = f"worker {job.worker_id or '?'} stopped sending heartbeats"
        if job.status == S.CANCELLING:
            job.status = S.CANCELLED
            job.finished_at = timezone.now()
        elif job.attempts >= max_attempts:
            job.status = S.FAILED
            job.error = f"The job was lost {job.attempts} times ({lost}); giving up. Retry it to try again."
            job.finished_at = timezone.now()
        else:
            job.status = S.QUEUED
            _new_attempt(job)
        job.save()
        _announce(job, previous)
    return job.status


def requeue_after_error(job_id: int, error: str, max_attempts: int, backoff_seconds: int = 10,
                        retry_after: float | None = None) -> TrainingJob | None:
    """A retryable backend error: back to the queue while attempts remain (the caller sends it again
    after a back-off, or after `retry_after` seconds where the remote side said so), otherwise failed
    with the error. None if the job is no longer this run's."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.status != S.RUNNING:
            return None
        previous = job.status
        if job.attempts >= max_attempts:
            job.status = S.FAILED
            job.error = f"{error} (gave up after {job.attempts} attempts)"[:5000]
            job.finished_at = timezone.now()
        else:
            job.status = S.QUEUED
            _new_attempt(job)
            job.error = f"attempt {job.attempts} failed, retrying: {error}"[:5000]
            # Exponential back-off (10 s, 20 s, 40 s ... by default) capped at 10 minutes; a remote's own
            # wait (a 429's reset) wins, up to an hour.
            wait = min(600, backoff_seconds * 2 ** (job.attempts - 1))
            job.not_before = timezone.now() + timedelta(seconds=max(wait, min(retry_after or 0, 3600)))
        job.save()
        _announce(job, previous)
    return job


def record_remote_id(job_id: int, worker_id: str, remote_id: str) -> bool:
    """Store the remote run's id on the job this worker runs, committed at once (a successor that
    finds it re-attaches instead of starting a second run). False: the job is no longer this worker's."""
    with transaction.atomic():
        return bool(TrainingJob.objects.filter(pk=job_id, worker_id=worker_id, status__in=BUSY)
                    .update(remote_id=remote_id[:200], heartbeat_at=timezone.now()))


def heartbeat(job_id: int, worker_id: str) -> bool:
    """Refresh the heartbeat if this worker still owns the running job; False means: stop working."""
    return bool(TrainingJob.objects.filter(pk=job_id, worker_id=worker_id,
                                           status__in=[S.RUNNING, S.CANCELLING])
                .update(heartbeat_at=timezone.now()))


def stale_cutoff(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)
