"""Every status change of a CaptionRun happens here, under `select_for_update`.

    queued → running → completed | failed | cancelled, with `cancelling` while a stop is in flight;
    running/cancelling → running again when a worker takes over a run whose worker died.

Each change emits one after-commit "caption run changed" event; the datasets app's listener
broadcasts it to the dataset's websocket group.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from datasets_app.models import CaptionRun, RunStatus
from lorasite import events
from lorasite.errors import Conflict

S = RunStatus
ACTIVE = (S.QUEUED, S.RUNNING, S.CANCELLING)
FINISHED = (S.COMPLETED, S.FAILED, S.CANCELLED)
TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLING}),
    S.CANCELLING: frozenset({S.CANCELLED, S.FAILED, S.COMPLETED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


class IllegalTransition(Conflict):
    def __init__(self, run: CaptionRun, to: str):
        super().__init__(f"A {run.status} caption run cannot become {to}.")


def _transition(run_id: int, to: str, mutate: Callable[[CaptionRun], None] | None = None,
                expect: tuple[str, ...] | None = None) -> CaptionRun | None:
    """Lock, check, apply. With `expect`, a run in another state is left alone (None returned)."""
    with transaction.atomic():
        run = CaptionRun.objects.select_for_update().get(pk=run_id)
        if expect is not None and run.status not in expect:
            return None
        if to not in TRANSITIONS[run.status]:
            raise IllegalTransition(run, to)
        previous = run.status
        run.status = to
        if to in FINISHED:
            run.finished_at = timezone.now()
        if mutate is not None:
            mutate(run)
        run.save()
        events.emit(events.CAPTION_RUN_CHANGED, run=run, previous=previous)
    return run


def submit(run: CaptionRun) -> None:
    """A new run (created queued) is announced."""
    events.emit(events.CAPTION_RUN_CHANGED, run=run, previous="")


def claim(run_id: int, worker_id: str) -> CaptionRun | None:
    """The run for this worker: a queued one, or a running one whose worker's heartbeat is stale
    (it died; the new worker resumes it). None when it is finished or another worker is alive on it."""
    stale_before = timezone.now() - timedelta(seconds=settings.CAPTION_RUN_STALE_SECONDS)
    with transaction.atomic():
        run = CaptionRun.objects.select_for_update().get(pk=run_id)
        takeover = run.status in (S.RUNNING, S.CANCELLING) and (
            run.heartbeat_at is None or run.heartbeat_at < stale_before)
        if run.status != S.QUEUED and not takeover:
            return None
        previous = run.status
        now = timezone.now()
        if run.status == S.QUEUED:
            run.status = S.RUNNING
            run.started_at = now
        run.worker_id = worker_id
        run.heartbeat_at = now
        run.attempts += 1
        run.save()
        if previous != run.status:
            events.emit(events.CAPTION_RUN_CHANGED, run=run, previous=previous)
    return run


def heartbeat(run_id: int, worker_id: str) -> str | None:
    """Refresh the heartbeat if this worker still holds the run; returns its status (None: lost)."""
    now = timezone.now()
    held = CaptionRun.objects.filter(pk=run_id, worker_id=worker_id, status__in=(S.RUNNING, S.CANCELLING))
    if not held.update(heartbeat_at=now):
        return None
    return CaptionRun.objects.filter(pk=run_id).values_list("status", flat=True).first()


def status_of(run_id: int) -> str | None:
    return CaptionRun.objects.filter(pk=run_id).values_list("status", flat=True).first()


def request_cancel(run: CaptionRun) -> CaptionRun:
    """Queued: cancelled at once. Running: cancelling, and the worker stops within one request."""
    current = CaptionRun.objects.filter(pk=run.pk).values_list("status", flat=True).get()
    if current == S.QUEUED:
        done = _transition(run.pk, S.CANCELLED, expect=(S.QUEUED,))
        if done is not None:
            return done
    if current in FINISHED:
        raise Conflict(f"This caption run is already {current}.")
    return _transition(run.pk, S.CANCELLING, expect=(S.RUNNING,)) or CaptionRun.objects.get(pk=run.pk)


def finish(run_id: int, error: str = "") -> CaptionRun | None:
    """Completed, cancelled (if a cancel was asked) or failed (with `error`)."""
    current = CaptionRun.objects.filter(pk=run_id).values_list("status", flat=True).get()
    if current not in (S.RUNNING, S.CANCELLING):
        return None
    if error:
        return _transition(run_id, S.FAILED, lambda r: setattr(r, "error", error[:2000]),
                           expect=(S.RUNNING, S.CANCELLING))
    to = S.CANCELLED if current == S.CANCELLING else S.COMPLETED
    return _transition(run_id, to, expect=(current,))


def fail_before_start(run_id: int, error: str) -> CaptionRun | None:
    return _transition(run_id, S.FAILED, lambda r: setattr(r, "error", error[:2000]), expect=(S.QUEUED,))
