"""Loss curves for charts: thousands of points reduced on the server, keeping the shape."""

from __future__ import annotations

from training_app.models import LossPoint, TrainingJob


def downsampled_loss_points(job: TrainingJob, since_step: int = 0, max_points: int = 2000) -> list[LossPoint]:
    """At most about `max_points` points: every point when there are few, otherwise per bucket of
    steps the first point plus the min and max (so spikes stay visible), always with the last one."""
    qs = LossPoint.objects.filter(job=job, step__gt=since_step).order_by("step")
    count = qs.count()
    if count <= max_points:
        return list(qs)
    rows = list(qs.only("step", "loss", "lr", "at"))
    bucket = max(1, -(-len(rows) // max(1, max_points // 3)))
    kept: list[LossPoint] = []
    for start in range(0, len(rows), bucket):
        chunk = rows[start:start + bucket]
        picks = {id(chunk[0]): chunk[0], id(min(chunk, key=lambda p: p.loss)): min(chunk, key=lambda p: p.loss),
                 id(max(chunk, key=lambda p: p.loss)): max(chunk, key=lambda p: p.loss)}
        kept.extend(sorted(picks.values(), key=lambda p: p.step))
    if kept[-1] is not rows[-1]:
        kept.append(rows[-1])
    return kept
