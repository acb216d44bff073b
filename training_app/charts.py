"""Loss curves for charts: every point while there are few, and past a bound, thousands of points
reduced on the server keeping the shape (first, lowest and highest per bucket, and the last)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from training_app.models import LossPoint, TrainingJob

Point = TypeVar("Point")


def downsample(points: Sequence[Point], max_points: int, loss: Callable[[Point], float]) -> list[Point]:
    """`points` (in step order) unchanged when there are at most `max_points`; otherwise at most
    `max_points`: per bucket of consecutive points its first, lowest and highest (so spikes stay
    visible), and always the very last point."""
    if len(points) <= max_points:
        return list(points)
    # Three picks per bucket, one place kept for the last point.
    buckets = max(1, (max_points - 1) // 3)
    size = -(-len(points) // buckets)
    kept: list[Point] = []
    for start in range(0, len(points), size):
        chunk = range(start, min(start + size, len(points)))
        lowest = min(chunk, key=lambda i: loss(points[i]))
        highest = max(chunk, key=lambda i: loss(points[i]))
        kept.extend(points[i] for i in sorted({chunk[0], lowest, highest}))
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def downsampled_loss_points(job: TrainingJob, since_step: int = 0, max_points: int = 2000) -> list[LossPoint]:
    """The job's loss points after `since_step`, every one up to `max_points`, else `downsample`d."""
    qs = LossPoint.objects.filter(job=job, step__gt=since_step).order_by("step")
    if qs.count() <= max_points:
        return list(qs)
    return downsample(list(qs.only("step", "loss", "lr", "at")), max_points, lambda p: p.loss)
