"""The ETA of a running job settles: it is smoothed over steps, one slow step barely moves it, and
there is no figure ("estimating") until enough steps have been measured."""

from __future__ import annotations

from itertools import pairwise

import pytest

from training_app.eta import MIN_SECONDS, MIN_STEPS, StepPace, advance_pace, eta_seconds


def run(times: list[float], start_step: int = 1, start_at: float = 100.0) -> StepPace:
    """The pace after steps start_step, start_step + 1, ... taking `times` seconds each."""
    pace = advance_pace(StepPace(), start_step, start_at)
    now = start_at
    for i, seconds in enumerate(times, start=1):
        now += seconds
        pace = advance_pace(pace, start_step + i, now)
    return pace


def test_no_eta_until_enough_steps_and_seconds_are_measured():
    assert eta_seconds(StepPace(), 100) is None
    assert eta_seconds(run([1.0] * (MIN_STEPS - 1)), 100) is None
    # Enough steps, but they were too quick to trust yet.
    assert eta_seconds(run([0.01] * (MIN_STEPS * 4)), 1000) is None
    assert eta_seconds(run([1.0] * MIN_STEPS), 100) == pytest.approx((100 - 1 - MIN_STEPS) * 1.0)


def test_a_steady_pace_gives_the_remaining_steps_times_the_step_time():
    pace = run([0.5] * 40)
    assert pace.seconds_per_step == pytest.approx(0.5)
    assert eta_seconds(pace, 141) == pytest.approx(100 * 0.5)


def test_one_slow_step_moves_the_eta_by_little():
    steady = run([0.5] * 30)
    with_sample = run([0.5] * 30 + [20.0])  # a sample render between two steps
    before = eta_seconds(steady, 1000)
    after = eta_seconds(with_sample, 1000)
    assert after / before < 1.35
    # ...and it is forgotten again.
    recovered = run([0.5] * 30 + [20.0] + [0.5] * 30)
    assert eta_seconds(recovered, 1000) / eta_seconds(run([0.5] * 61), 1000) == pytest.approx(1.0, abs=0.02)


def test_a_lasting_change_of_pace_takes_over_within_a_few_dozen_steps():
    pace = run([0.5] * 30 + [1.0] * 40)
    assert pace.seconds_per_step == pytest.approx(1.0, rel=0.03)


def test_the_eta_settles_where_the_raw_average_of_a_noisy_start_does_not():
    # The first steps are slow (warm-up), then the pace is steady: successive ETAs shrink steadily.
    times = [3.0, 2.0, 1.5] + [0.5] * 60
    pace = run(times[:20])
    etas = []
    for seconds in times[20:]:
        pace = advance_pace(pace, pace.last_step + 1, pace.last_at + seconds)
        etas.append(eta_seconds(pace, 200))
    assert all(later <= earlier for earlier, later in pairwise(etas))


def test_several_steps_at_once_count_as_that_many_steps():
    one_by_one = run([0.5] * 20)
    pace = advance_pace(StepPace(), 1, 100.0)
    pace = advance_pace(pace, 11, 105.0)
    pace = advance_pace(pace, 21, 110.0)
    assert pace.measured_steps == 20 and pace.measured_seconds == pytest.approx(10.0)
    assert pace.seconds_per_step == pytest.approx(one_by_one.seconds_per_step)
    assert eta_seconds(pace, 121) == pytest.approx(50.0)


def test_a_step_count_that_goes_back_restarts_measuring_but_keeps_the_pace():
    pace = run([0.5] * 20)
    resumed = advance_pace(pace, 5, pace.last_at + 30.0)  # a resumed attempt, after a long pause
    assert resumed.seconds_per_step == pytest.approx(0.5)
    assert advance_pace(resumed, 6, resumed.last_at + 0.5).seconds_per_step == pytest.approx(0.5)


def test_min_seconds_is_a_real_bound():
    # Guards the constant: a run of MIN_STEPS steps of exactly the bound gets an ETA.
    assert eta_seconds(run([MIN_SECONDS / MIN_STEPS * 1.01] * MIN_STEPS), 100) is not None
