"""Progress reporting is bounded (database and websocket) and never loses the final figures; the job
websocket gives a snapshot first and refuses outsiders."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from lorasite.asgi import application
from training_app import lifecycle
from training_app.models import LossPoint, TrainingJob
from training_app.reporting import JobReporter
from training_app.services import submit_job

pytestmark = pytest.mark.django_db(transaction=True)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def running_job(member, dataset_a, tiny_base_model):
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"resolution": 64, "max_steps": 1000})
    return lifecycle.claim(job.pk, "w1")


async def drain(layer, channel, timeout=0.3):
    out = []
    while True:
        try:
            out.append((await asyncio.wait_for(layer.receive(channel), timeout))["payload"])
        except TimeoutError:
            return out


@pytest.mark.asyncio
async def test_reporter_publishes_at_most_ten_a_second_and_always_the_last(running_job):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"job.{running_job.uuid}", channel)
    clock = FakeClock()
    reporter = JobReporter(running_job, "w1", clock=clock)

    def run_steps():
        for step in range(1, 1001):
            clock.now += 0.002  # 500 steps/s for 2 seconds
            reporter.step(step, 1000, 1.0 / step, 1e-4)
        reporter.finish()

    await database_sync_to_async(run_steps)()
    progress = [m for m in await drain(layer, channel) if m["type"] == "progress"]
    assert len(progress) <= 2 * 10 + 2
    assert progress[-1]["step"] == 1000 and progress[-1]["percent"] == 100.0
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)
    job = await database_sync_to_async(TrainingJob.objects.get)(pk=running_job.pk)
    assert job.step == 1000
    assert await database_sync_to_async(LossPoint.objects.filter(job=job).count)() == 1000


def test_reporter_writes_the_database_at_a_bounded_rate(running_job, django_assert_max_num_queries):
    clock = FakeClock()
    reporter = JobReporter(running_job, "w1", clock=clock, control_interval=1e9)
    with django_assert_max_num_queries(3 * 4):  # ~1 flush a second, a few queries each
        for step in range(1, 301):
            clock.now += 0.01  # 3 seconds of steps
            reporter.step(step, 1000, 0.5, 1e-4)


def test_stop_and_actions_come_from_the_database(running_job):
    clock = FakeClock()
    reporter = JobReporter(running_job, "w1", clock=clock)
    assert not reporter.should_stop()
    TrainingJob.objects.filter(pk=running_job.pk).update(requested_actions=["sample"])
    clock.now += 1
    assert reporter.pending_actions() == frozenset({"sample"})
    assert reporter.pending_actions() == frozenset()
    lifecycle.request_cancel(running_job.pk)
    clock.now += 1
    assert reporter.should_stop()


def test_a_worker_that_lost_the_job_stops(running_job):
    reporter = JobReporter(running_job, "w1", clock=FakeClock())
    TrainingJob.objects.filter(pk=running_job.pk).update(worker_id="someone-else")
    assert reporter.should_stop()


@database_sync_to_async
def cookie_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(job, cookie):
    return WebsocketCommunicator(application, f"/ws/jobs/{job.uuid}/",
                                 headers=[(b"origin", b"http://127.0.0.1"), (b"cookie", cookie)])


@pytest.mark.asyncio
async def test_job_socket_sends_a_snapshot_then_live_messages(running_job, member):
    reporter = JobReporter(running_job, "w1", clock=FakeClock())
    await database_sync_to_async(lambda: [reporter.step(s, 1000, 0.9, 1e-4) for s in (1, 2)] and reporter.finish())()
    ws = socket(running_job, await cookie_for(member))
    connected, _ = await ws.connect()
    assert connected
    snapshot = await ws.receive_json_from()
    assert snapshot["type"] == "snapshot" and snapshot["status"] == "running"
    assert [p[0] for p in snapshot["loss_points"]] == [1, 2] and snapshot["step"] == 2
    await database_sync_to_async(lifecycle.request_cancel)(running_job.pk)
    message = await ws.receive_json_from(timeout=2)
    assert message == {"type": "status", "job": str(running_job.uuid), "status": "cancelling", "error": None,
                       "attempts": 1}
    await ws.disconnect()


@pytest.mark.asyncio
async def test_job_socket_refuses_outsiders(running_job, outsider):
    connected, code = await socket(running_job, await cookie_for(outsider)).connect()
    assert not connected and code == 4404


@pytest.mark.asyncio
async def test_saved_lora_files_are_offered_at_once_and_announced(running_job, settings):
    from pathlib import Path

    from training_app.models import Artifact

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"job.{running_job.uuid}", channel)
    out = Path(settings.MEDIA_ROOT) / running_job.output_dir_name()
    (out / "diffusers").mkdir(parents=True)
    kohya, diffusers = out / "my_lora.safetensors", out / "diffusers" / "pytorch_lora_weights.safetensors"
    reporter = JobReporter(running_job, "w1", clock=FakeClock())

    def save(step):
        kohya.write_bytes(f"kohya {step}".encode())
        diffusers.write_bytes(f"diffusers {step}".encode())
        reporter.lora_saved("kohya", kohya, step)
        reporter.lora_saved("diffusers", diffusers, step)

    await database_sync_to_async(save)(5)
    await database_sync_to_async(save)(10)  # "save now" again: the same artifacts, rewritten
    rows = await database_sync_to_async(
        lambda: sorted(Artifact.objects.filter(job=running_job).values_list("kind", "step", "size_bytes")))()
    assert rows == [("lora_diffusers", 10, len(b"diffusers 10")), ("lora_kohya", 10, len(b"kohya 10"))]
    announced = [m["kind"] for m in await drain(layer, channel) if m["type"] == "artifact"]
    assert announced == ["lora_kohya", "lora_diffusers"] * 2


def test_only_the_files_the_trainer_reports_become_lora_artifacts(running_job, settings):
    from pathlib import Path

    out = Path(settings.MEDIA_ROOT) / running_job.output_dir_name()
    (out / "checkpoints" / "step-00000005").mkdir(parents=True)
    (out / "a_stray_file.safetensors").write_bytes(b"not ours")
    reporter = JobReporter(running_job, "w1", clock=FakeClock())
    reporter.checkpoint(5, out / "checkpoints" / "step-00000005")
    assert list(running_job.artifacts.values_list("kind", flat=True)) == ["checkpoint"]
    # The runner registers what a backend's outcome lists, once: files already reported are not repeated.
    kohya = out / "job.safetensors"
    kohya.write_bytes(b"kohya")
    reporter.lora_saved("kohya", kohya, 6)
    first = running_job.artifacts.get(kind="lora_kohya").uuid
    reporter.record_lora_files(6, {"lora_kohya": kohya})
    assert running_job.artifacts.get(kind="lora_kohya").uuid == first


def test_a_sample_keeps_the_prompt_the_trainer_reported(running_job, tmp_path):
    from PIL import Image

    image = tmp_path / "whatever-name.png"
    Image.new("RGB", (8, 8)).save(image)
    reporter = JobReporter(running_job, "w1", clock=FakeClock())
    reporter.sample(7, "shp, a square on grass", image)
    sample = running_job.artifacts.get(kind="sample")
    assert (sample.step, sample.prompt) == (7, "shp, a square on grass")
    assert sample.path.endswith("samples/whatever-name.png")


@pytest.mark.django_db
def test_a_resumed_run_replaces_the_loss_points_of_the_dead_attempt(running_job):
    first = JobReporter(running_job, running_job.worker_id)
    for step in range(1, 11):
        first.step(step, 12, 1.0, 1e-4)
    first.flush()
    # The worker died at step 10; the job resumes from its step-6 checkpoint and runs to the end.
    second = JobReporter(running_job, running_job.worker_id)
    for step in range(7, 13):
        second.step(step, 12, 0.5, 1e-4)
    second.finish()
    points = list(LossPoint.objects.filter(job=running_job).order_by("step").values_list("step", "loss"))
    assert [s for s, _ in points] == list(range(1, 13))
    assert all(loss == 0.5 for step, loss in points if step >= 7)
