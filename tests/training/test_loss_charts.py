"""Loss charts get every point up to a bound, and past it a bounded number that keeps the curve's
shape; the live stream sends every step's point, not only the ones that fall on a publish."""

from __future__ import annotations

import asyncio
import random

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from training_app import lifecycle
from training_app.charts import downsample, downsampled_loss_points
from training_app.models import LossPoint
from training_app.reporting import JobReporter
from training_app.services import submit_job


def curve(n: int, seed: int = 1) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    return [(step, 1.0 / step + rng.random() * 0.1) for step in range(1, n + 1)]


@pytest.mark.parametrize("n", [0, 1, 2, 60, 1999, 2000])
def test_every_point_is_kept_up_to_the_bound(n):
    points = curve(n)
    assert downsample(points, 2000, lambda p: p[1]) == points


@pytest.mark.parametrize("n,bound", [(2001, 2000), (10_000, 2000), (100_000, 800), (50, 10), (7, 4)])
def test_past_the_bound_the_count_stays_within_it_and_keeps_the_shape(n, bound):
    points = curve(n)
    points[n // 2] = (points[n // 2][0], 50.0)  # a spike
    kept = downsample(points, bound, lambda p: p[1])
    assert len(kept) <= bound
    assert len(kept) >= bound // 2
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert (points[n // 2][0], 50.0) in kept
    assert min(points, key=lambda p: p[1]) in kept
    assert [p[0] for p in kept] == sorted({p[0] for p in kept})


@pytest.fixture
def running_job(member, dataset_a, tiny_base_model):
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"resolution": 64, "max_steps": 60})
    return lifecycle.claim(job.pk, "w1")


@pytest.mark.django_db
def test_stored_points_come_back_whole_up_to_the_bound(running_job):
    now = timezone.now()
    LossPoint.objects.bulk_create([LossPoint(job=running_job, step=s, loss=v, lr=1e-4, at=now) for s, v in curve(60)])
    assert [p.step for p in downsampled_loss_points(running_job, max_points=60)] == list(range(1, 61))
    assert len(downsampled_loss_points(running_job, max_points=30)) <= 30
    assert [p.step for p in downsampled_loss_points(running_job, since_step=50)] == list(range(51, 61))


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_live_stream_carries_every_step_though_progress_is_throttled(running_job):
    layer = get_channel_layer()
    job_channel, team_channel = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(f"job.{running_job.uuid}", job_channel)
    await layer.group_add(f"team.{running_job.team.uuid}", team_channel)
    clock = FakeClock()
    reporter = JobReporter(running_job, "w1", clock=clock)

    def run():
        for step in range(1, 61):
            clock.now += 0.07  # ~14 steps a second, more than the 10 progress messages a second
            reporter.step(step, 60, 1.0 / step, 1e-4)
        reporter.finish()

    await database_sync_to_async(run)()

    async def drain(channel):
        out = []
        while True:
            try:
                out.append((await asyncio.wait_for(layer.receive(channel), 0.3))["payload"])
            except TimeoutError:
                return out

    progress = [m for m in await drain(job_channel) if m["type"] == "progress"]
    assert len(progress) < 60
    streamed = [point[0] for message in progress for point in message["points"]]
    assert streamed == list(range(1, 61))
    assert [m for m in progress if m["points"]][-1]["points"][-1] == [60, pytest.approx(1 / 60), pytest.approx(1e-4)]
    # The dashboard needs the figures, not the curve.
    assert all("points" not in m for m in await drain(team_channel) if m["type"] == "progress")
