"""A running job's ETA: a smoothed time per step, and no figure at all until there is enough to go on.

Pure functions over a frozen `StepPace`, so the smoothing is tested without clocks or a database.
The time per step is an exponential moving average, bias-corrected (Adam-style) so the first few
steps weigh equally instead of the very first one dominating. One slow step (a sample render, a
checkpoint) counts at most `SPIKE_LIMIT` times the current pace, so the ETA does not jump each time;
a lasting change of pace still takes over within a few dozen steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ALPHA = 0.1  # weight of the newest step: about the last 20 steps count
MIN_STEPS = 5  # measured steps before an ETA is given ("estimating" until then)
MIN_SECONDS = 2.0  # ...and measured seconds
SPIKE_LIMIT = 4.0


@dataclass(frozen=True)
class StepPace:
    """What has been seen of this run's steps; start from `StepPace()`."""

    last_step: int | None = None
    last_at: float | None = None
    weighted_seconds: float = 0.0  # EMA accumulator (biased towards 0 until `weight` reaches 1)
    weight: float = 0.0  # 1 - (1 - ALPHA) ** measured_steps: the bias correction
    measured_steps: int = 0
    measured_seconds: float = 0.0

    @property
    def seconds_per_step(self) -> float | None:
        return self.weighted_seconds / self.weight if self.weight > 0 else None


def advance_pace(pace: StepPace, step: int, now: float, alpha: float = ALPHA) -> StepPace:
    """The pace after the run reached `step` at clock time `now` (seconds, monotonic).

    Several steps at once (a throttled or remote reporter) count as that many steps of equal time.
    A step count that goes back (a resumed run) restarts the measuring point but keeps the pace."""
    if pace.last_step is None or pace.last_at is None or step <= pace.last_step:
        return replace(pace, last_step=step, last_at=now)
    steps = step - pace.last_step
    elapsed = max(0.0, now - pace.last_at)
    per_step = elapsed / steps
    current = pace.seconds_per_step
    if current is not None and pace.measured_steps >= MIN_STEPS:
        per_step = min(per_step, current * SPIKE_LIMIT)
    keep = (1.0 - alpha) ** steps
    return StepPace(
        last_step=step,
        last_at=now,
        weighted_seconds=keep * pace.weighted_seconds + (1.0 - keep) * per_step,
        weight=keep * pace.weight + (1.0 - keep),
        measured_steps=pace.measured_steps + steps,
        measured_seconds=pace.measured_seconds + elapsed,
    )


def eta_seconds(pace: StepPace, total_steps: int) -> float | None:
    """Seconds left to `total_steps` at the smoothed pace; None while still estimating."""
    per_step = pace.seconds_per_step
    if per_step is None or pace.last_step is None:
        return None
    if pace.measured_steps < MIN_STEPS or pace.measured_seconds < MIN_SECONDS:
        return None
    return round(max(0, total_steps - pace.last_step) * per_step, 1)
