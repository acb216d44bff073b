"""Job status changes: only legal moves, under a row lock, idempotent for workers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training_app import lifecycle
from training_app.lifecycle import TRANSITIONS, IllegalTransition
from training_app.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(team_a, member, dataset_a, tiny_base_model):
    from training_app.services import submit_job

    return submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"max_steps": 5,
                                                                                          "resolution": 64})


def test_claim_is_idempotent(job):
    assert lifecycle.claim(job.pk, "w1").status == JobStatus.RUNNING
    assert lifecycle.claim(job.pk, "w2") is None
    job.refresh_from_db()
    assert job.worker_id == "w1" and job.attempts == 1


def test_completed_is_final(job):
    lifecycle.claim(job.pk, "w1")
    lifecycle.complete(job.pk)
    with pytest.raises(IllegalTransition):
        lifecycle.request_cancel(job.pk)
    with pytest.raises(IllegalTransition):
        lifecycle.retry(job.pk)
    assert lifecycle.fail(job.pk, "late") is None
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.COMPLETED


def test_cancel_of_a_queued_job_is_immediate_and_of_a_running_one_is_cooperative(job):
    lifecycle.claim(job.pk, "w1")
    assert lifecycle.request_cancel(job.pk).status == JobStatus.CANCELLING
    assert lifecycle.finish_cancel(job.pk).status == JobStatus.CANCELLED
    lifecycle.retry(job.pk)
    assert lifecycle.request_cancel(job.pk).status == JobStatus.CANCELLED


def test_team_limit_keeps_extra_jobs_queued(job, team_a, member, dataset_a):
    from training_app.services import submit_job

    team_a.max_concurrent_jobs = 1
    team_a.save()
    second = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"resolution": 64})
    assert lifecycle.claim(job.pk, "w1") is not None
    assert lifecycle.claim(second.pk, "w2") is None
    second.refresh_from_db()
    assert second.status == JobStatus.QUEUED


def test_reaper_requeues_then_fails_after_the_attempt_limit(job):
    from training_app.dispatch import reap_lost_jobs

    lifecycle.claim(job.pk, "w1")
    assert reap_lost_jobs(stale_after=0, max_attempts=2)["requeued"] == 1
    lifecycle.claim(job.pk, "w2")
    assert reap_lost_jobs(stale_after=0, max_attempts=2)["failed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "lost 2 times" in job.error


def test_reaper_leaves_fresh_heartbeats_alone(job):
    from training_app.dispatch import reap_lost_jobs

    lifecycle.claim(job.pk, "w1")
    assert reap_lost_jobs(stale_after=3600) == {"requeued": 0, "failed": 0, "cancelled": 0}


EVENTS = ["claim", "complete", "fail", "cancel", "finish_cancel", "retry", "reap"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(st.sampled_from(EVENTS), max_size=12))
def test_random_event_sequences_never_reach_an_illegal_state(job, events):
    TrainingJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, attempts=0, worker_id="")
    previous = JobStatus.QUEUED
    for event in events:
        try:
            {
                "claim": lambda: lifecycle.claim(job.pk, "w"),
                "complete": lambda: lifecycle.complete(job.pk),
                "fail": lambda: lifecycle.fail(job.pk, "boom"),
                "cancel": lambda: lifecycle.request_cancel(job.pk),
                "finish_cancel": lambda: lifecycle.finish_cancel(job.pk),
                "retry": lambda: lifecycle.retry(job.pk),
                "reap": lambda: lifecycle.requeue_lost(job.pk, lifecycle.stale_cutoff(-60), max_attempts=3),
            }[event]()
        except IllegalTransition:
            pass
        current = TrainingJob.objects.values_list("status", flat=True).get(pk=job.pk)
        assert current == previous or current in TRANSITIONS[previous], (event, previous, current)
        previous = current


def test_reconciler_resends_a_queued_job_whose_message_was_lost(job, settings, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from lorasite.broker import get_broker
    from training_app.dispatch import reconcile_queued_jobs

    broker = get_broker()
    broker.flush_all()
    settings.JOB_REDISPATCH_AFTER_SECONDS = 60
    # This test's transaction never commits, so the submit's on-commit send never happened: lost.
    assert reconcile_queued_jobs() == 1
    assert reconcile_queued_jobs() == 0  # just sent: not overdue yet
    TrainingJob.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert reconcile_queued_jobs() == 1
    messages = broker.queues["gpu"].queue
    assert [m for m in list(messages) if str(job.uuid).encode() in m]
    job.refresh_from_db()
    assert timezone.now() - job.dispatched_at < timedelta(seconds=5)


def test_retryable_error_requeues_with_doubling_back_off_then_fails_at_the_attempt_limit(job):
    from datetime import timedelta

    from django.utils import timezone

    lifecycle.claim(job.pk, "w1")
    before = timezone.now()
    requeued = lifecycle.requeue_after_error(job.pk, "ComfyUI answered 502", max_attempts=3, backoff_seconds=10)
    assert requeued.status == JobStatus.QUEUED and requeued.worker_id == "" and requeued.dispatched_at is None
    assert "attempt 1 failed, retrying: ComfyUI answered 502" in requeued.error
    assert timedelta(seconds=9) < requeued.not_before - before < timedelta(seconds=11)

    lifecycle.claim(job.pk, "w2")
    before = timezone.now()
    # The remote side asked for a longer wait (a rate limit's reset): that wins over the back-off.
    requeued = lifecycle.requeue_after_error(job.pk, "rate limited", 3, backoff_seconds=10, retry_after=90)
    assert timedelta(seconds=89) < requeued.not_before - before < timedelta(seconds=91)

    lifecycle.claim(job.pk, "w3")
    before = timezone.now()
    failed = lifecycle.requeue_after_error(job.pk, "ComfyUI answered 502", 3)
    assert failed.status == JobStatus.FAILED
    assert failed.error == "ComfyUI answered 502 (gave up after 3 attempts)"
    assert lifecycle.requeue_after_error(job.pk, "late", 3) is None


def test_a_job_waiting_out_its_back_off_is_sent_with_a_delay_and_says_so(job, django_capture_on_commit_callbacks):
    from lorasite.broker import get_broker
    from training_app.dispatch import dispatch_team, waiting_reason

    broker = get_broker()
    broker.flush_all()
    lifecycle.claim(job.pk, "w1")
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.requeue_after_error(job.pk, "server down", max_attempts=3, backoff_seconds=30)
        dispatch_team(job.team_id)
    job.refresh_from_db()
    assert job.dispatched_at is not None
    assert waiting_reason(job).startswith("retrying after an error at ")
    # The broker holds it on its delay queue until the back-off has passed, not on the ready queue.
    assert not [m for m in broker.queues["gpu"].queue if str(job.uuid).encode() in m]
    assert [m for m in broker.queues["gpu.DQ"].queue if str(job.uuid).encode() in m]
