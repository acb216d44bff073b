"""Before its first step a job says what it is doing (loading model, caching latents n/N, caching
text, training): the trainer reports each phase, the job reporter keeps it on the job row, logs it
and publishes it, and the job websocket's snapshot carries it to a page that (re)connects."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from lorasite.asgi import application
from training_app import lifecycle
from training_app.models import TrainingJob
from training_app.reporting import JobReporter, phase_label
from training_app.services import submit_job
from training_app.trainer import train
from training_app.trainer.reporter import PHASES, RecordingReporter


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class OrderedReporter(RecordingReporter):
    """Records phases and steps in the order they came."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple] = []

    def phase(self, name, done=0, total=0):
        super().phase(name, done, total)
        self.events.append(("phase", name, done, total))

    def step(self, step, total_steps, loss, lr):
        super().step(step, total_steps, loss, lr)
        self.events.append(("step", step))


def test_the_trainer_reports_every_phase_in_order_before_the_first_step(make_spec):
    reporter = OrderedReporter()
    train(make_spec(max_steps=3, batch_size=2, flip_aug=True), reporter)
    first_step = reporter.events.index(("step", 1))
    before = reporter.events[:first_step]
    assert [e[1] for e in before if e[2] == 0] == list(PHASES)
    # Latents advance one (image, flip) pair at a time, up to all 4 images x 2 flips.
    latents = [(e[2], e[3]) for e in before if e[1] == "caching latents"]
    assert latents == [(n, 8) for n in range(0, 9)]
    assert before[-1] == ("phase", "training", 0, 3)
    assert all(e[0] == "step" for e in reporter.events[first_step:])


def test_a_text_encoder_run_without_latent_cache_skips_those_phases(make_spec):
    reporter = OrderedReporter()
    train(make_spec(max_steps=1, cache_latents=False, train_text_encoder=True), reporter)
    assert [p[0] for p in reporter.phases] == ["loading model", "training"]


@pytest.fixture
def running_job(member, dataset_a, tiny_base_model):
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"resolution": 64, "max_steps": 60})
    return lifecycle.claim(job.pk, "w1")


def test_phase_labels_count_what_is_counted():
    assert phase_label({"name": "loading model", "done": 0, "total": 0}) == "loading model"
    assert phase_label({"name": "caching latents", "done": 3, "total": 8}) == "caching latents 3/8"
    assert phase_label({}) == ""


@pytest.mark.django_db(transaction=True)
def test_each_new_phase_is_written_to_the_job_row_and_the_log_at_once(running_job):
    clock = FakeClock()
    reporter = JobReporter(running_job, "w1", clock=clock)
    reporter.phase("loading model")
    job = TrainingJob.objects.get(pk=running_job.pk)
    assert job.phase == {"name": "loading model", "done": 0, "total": 0}
    assert list(job.logs.values_list("line", flat=True)) == ["loading model…"]
    reporter.phase("caching latents", 0, 8)
    for done in range(1, 8):
        clock.now += 0.01
        reporter.phase("caching latents", done, 8)
    # Progress within a phase is written at the database interval, not per item...
    assert TrainingJob.objects.get(pk=running_job.pk).phase == {"name": "caching latents", "done": 0, "total": 8}
    # ...but its end is written at once, and a log line says only when a phase starts.
    reporter.phase("caching latents", 8, 8)
    job = TrainingJob.objects.get(pk=running_job.pk)
    assert job.phase == {"name": "caching latents", "done": 8, "total": 8}
    assert list(job.logs.values_list("line", flat=True)) == ["loading model…", "caching latents 0/8…"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_phases_are_published_on_the_job_socket_at_a_bounded_rate(running_job):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"job.{running_job.uuid}", channel)
    clock = FakeClock()
    reporter = JobReporter(running_job, "w1", clock=clock)

    def prepare():
        reporter.phase("loading model")
        for done in range(0, 1001):
            clock.now += 0.001  # 1000 latents in a second
            reporter.phase("caching latents", done, 1000)
        reporter.phase("training", 0, 60)

    await database_sync_to_async(prepare)()
    messages = []
    while True:
        try:
            messages.append((await asyncio.wait_for(layer.receive(channel), 0.3))["payload"])
        except TimeoutError:
            break
    phases = [m for m in messages if m["type"] == "phase"]
    assert phases[0] == {"type": "phase", "job": str(running_job.uuid), "name": "loading model", "done": 0, "total": 0,
                         "label": "loading model"}
    latents = [m for m in phases if m["name"] == "caching latents"]
    assert len(latents) <= 10 + 2
    assert latents[0]["done"] == 0 and latents[-1]["done"] == 1000
    assert phases[-1]["name"] == "training"


@database_sync_to_async
def cookie_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_page_that_connects_mid_phase_gets_the_phase_in_its_snapshot(running_job, member):
    reporter = JobReporter(running_job, "w1", clock=FakeClock())
    await database_sync_to_async(lambda: [reporter.phase("loading model"), reporter.phase("caching latents", 0, 8)])()
    ws = WebsocketCommunicator(application, f"/ws/jobs/{running_job.uuid}/",
                               headers=[(b"origin", b"http://127.0.0.1"), (b"cookie", await cookie_for(member))])
    connected, _ = await ws.connect()
    assert connected
    snapshot = await ws.receive_json_from()
    assert snapshot["phase"] == {"name": "caching latents", "done": 0, "total": 8, "label": "caching latents 0/8"}
    assert snapshot["logs"] == ["loading model…", "caching latents 0/8…"]
    assert snapshot["attempts"] == 1
    await ws.disconnect()


@pytest.mark.django_db
def test_the_job_page_shows_the_phase_of_a_running_job(running_job, member):
    from django.test import Client

    JobReporter(running_job, "w1", clock=FakeClock()).phase("caching text", 0, 4)
    client = Client()
    client.force_login(member)
    page = client.get(f"/teams/alpha/jobs/{running_job.uuid}/").content.decode()
    assert "caching text 0/4" in page
