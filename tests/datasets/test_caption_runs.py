"""Caption runs end to end inside one process: a provider row, a run over a dataset, the runner
against a loopback server, the versions it writes, its modes, failures, cancel, resume and undo."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from datasets_app import caption_runs
from datasets_app.caption_providers import create_provider
from datasets_app.caption_runner import execute_run
from datasets_app.captioning import postprocess as pp
from datasets_app.captioning.retry import RetryPolicy
from datasets_app.captions import set_caption
from datasets_app.listeners import resume_stale_runs
from datasets_app.models import Caption, CaptionRun, CaptionRunItem, CaptionSource, DatasetImage, RunStatus
from lorasite.errors import Conflict, InvalidInput
from tests.conftest import make_dataset
from tests.fakes.caption_servers import FakeCaptionServer, Reply

FAST = RetryPolicy(attempts=3, base_seconds=0.01, max_seconds=0.02)
CLEAN = [pp.Step("strip_boilerplate"), pp.Step("clean"), pp.Step("trigger")]


@pytest.fixture
def shapes(team_a, member):
    return make_dataset(team_a, member, count=6, captions=False)


def openai_provider(team, server, concurrency=4, name="vision"):
    return create_provider(team, name=name, type="openai", base_url=server.url, model=server.model,
                           concurrency=concurrency, timeout_seconds=5)


def captions_of(dataset):
    return list(DatasetImage.objects.filter(dataset=dataset).order_by("id").values_list("caption", flat=True))


def test_a_run_captions_each_image_once_as_a_version_naming_run_provider_and_model(shapes, member, team_a):
    with FakeCaptionServer("openai") as server:
        openai_provider(team_a, server)
        run = caption_runs.start_run(shapes, member, "vision", "Describe it.", "uncaptioned", CLEAN)
        execute_run(str(run.uuid), FAST)
        assert len(server.posts()) == 6
    run.refresh_from_db()
    assert (run.status, run.done, run.failed, run.total) == (RunStatus.COMPLETED, 6, 0, 6)
    assert captions_of(shapes) == ["shp, a shape of 64x64 pixels"] * 6
    versions = Caption.objects.filter(image__dataset=shapes)
    assert versions.count() == 6
    assert {(c.source, c.batch, c.provider_model) for c in versions} == {
        (CaptionSource.PROVIDER, run.uuid, "vision: fake-vision-1")}
    assert run.postprocess == [{"op": "strip_boilerplate"}, {"op": "clean"}, {"op": "trigger"}]


def test_a_second_delivery_of_a_finished_run_does_nothing(shapes, member, team_a):
    with FakeCaptionServer("openai") as server:
        openai_provider(team_a, server)
        run = caption_runs.start_run(shapes, member, "vision", None, "overwrite", [])
        execute_run(str(run.uuid), FAST)
        execute_run(str(run.uuid), FAST)
        assert len(server.posts()) == 6
    assert Caption.objects.filter(batch=run.uuid).count() == 6


def test_a_dead_workers_run_resumes_and_skips_the_images_already_done(shapes, member, team_a, settings):
    with FakeCaptionServer("openai") as server:
        openai_provider(team_a, server)
        run = caption_runs.start_run(shapes, member, "vision", None, "uncaptioned", [])
        server.then(*[Reply(delay=0.05)] * 6)
        # The first worker is "killed" after three images: its heartbeat stops there.
        items = list(CaptionRunItem.objects.filter(run=run).order_by("id"))
        for item in items[:3]:
            caption_runs.save_result(run, item.pk, str(item.image.uuid), "done before the crash", "m", [],
                                     pp.Context())
        CaptionRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, worker_id="dead:1",
                                                    heartbeat_at=timezone.now() - timedelta(minutes=5))
        # A live worker's run is left alone by a second delivery...
        CaptionRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        execute_run(str(run.uuid), FAST)
        assert server.posts() == []
        # ...a stale one is taken over, and only the three missing images are captioned.
        CaptionRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        execute_run(str(run.uuid), FAST)
        assert len(server.posts()) == 3
    run.refresh_from_db()
    assert (run.status, run.done, run.attempts) == (RunStatus.COMPLETED, 6, 1)
    assert Caption.objects.filter(batch=run.uuid).count() == 6
    assert sorted(set(captions_of(shapes))) == ["The image shows a shape of 64x64 pixels", "done before the crash"]


def test_saving_the_same_result_twice_writes_one_version(shapes, member, team_a):
    create_provider(team_a, name="tpl", type="simple")
    run = caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [])
    item = CaptionRunItem.objects.filter(run=run).first()
    first = caption_runs.save_result(run, item.pk, str(item.image.uuid), "a caption", "m", [], pp.Context())
    again = caption_runs.save_result(run, item.pk, str(item.image.uuid), "another", "m", [], pp.Context())
    assert first is not None and again is None
    assert Caption.objects.filter(image=item.image).count() == 1
    assert CaptionRun.objects.get(pk=run.pk).done == 1


@pytest.mark.parametrize("mode,expected", [
    ("uncaptioned", ["old words", "shp, a shape"]),
    ("overwrite", ["shp, a shape", "shp, a shape"]),
    ("prepend", ["shp, a shape, old words", "shp, a shape"]),
    ("append", ["shp, old words, a shape", "shp, a shape"]),
])
def test_modes_decide_what_happens_to_an_existing_caption(team_a, member, mode, expected):
    dataset = make_dataset(team_a, member, name=f"m-{mode}", count=2, captions=False)
    set_caption(DatasetImage.objects.filter(dataset=dataset).order_by("id").first(), "old words", member)
    with FakeCaptionServer("openai", caption="This image shows a shape") as server:
        openai_provider(team_a, server)
        run = caption_runs.start_run(dataset, member, "vision", None, mode, CLEAN)
        execute_run(str(run.uuid), FAST)
    assert captions_of(dataset) == expected


def test_uncaptioned_mode_with_nothing_to_do_is_refused(team_a, member):
    dataset = make_dataset(team_a, member, name="done", count=2, captions=True)
    create_provider(team_a, name="tpl", type="simple")
    with pytest.raises(InvalidInput, match="Every image already has a caption"):
        caption_runs.start_run(dataset, member, "tpl", None, "uncaptioned", [])


def test_one_bad_answer_fails_that_image_and_the_run_goes_on(shapes, member, team_a):
    with FakeCaptionServer("openai") as server:
        server.then(Reply(200, b"<html>oops"))
        openai_provider(team_a, server, concurrency=1)
        run = caption_runs.start_run(shapes, member, "vision", None, "uncaptioned", [])
        execute_run(str(run.uuid), FAST)
    run.refresh_from_db()
    assert (run.status, run.done, run.failed) == (RunStatus.COMPLETED, 5, 1)
    out = caption_runs.run_out(run)
    assert out["errors"][0]["error"] == "OpenAI-compatible server sent an answer that is not JSON"
    assert out["errors"][0]["name"] == "img0.png"


def test_out_of_credits_fails_the_run_at_once_with_what_to_fix(shapes, member, team_a):
    with FakeCaptionServer("openai") as server:
        server.then(*[Reply(402, {"error": {"message": "Insufficient credits", "code": 402}})] * 6)
        openai_provider(team_a, server, concurrency=1)
        run = caption_runs.start_run(shapes, member, "vision", None, "uncaptioned", [])
        execute_run(str(run.uuid), FAST)
        assert len(server.posts()) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "Insufficient credits" in run.error and "top it up" in run.error
    assert run.done == 0 and captions_of(shapes) == [""] * 6


def test_a_missing_key_variable_fails_the_run_naming_it(shapes, member, team_a, monkeypatch):
    monkeypatch.delenv("CAPTION_KEY_ALPHA", raising=False)
    with FakeCaptionServer("openai") as server:
        create_provider(team_a, name="keyed", type="openai", base_url=server.url, model=server.model,
                        api_key_env="CAPTION_KEY_ALPHA")
        run = caption_runs.start_run(shapes, member, "keyed", None, "uncaptioned", [])
        execute_run(str(run.uuid), FAST)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "CAPTION_KEY_ALPHA is not set" in run.error


def test_the_key_is_read_from_the_named_variable_and_sent(shapes, member, team_a, monkeypatch):
    monkeypatch.setenv("CAPTION_KEY_ALPHA_VISION", "sk-secret")
    with FakeCaptionServer("openai", api_key="sk-secret") as server:
        create_provider(team_a, name="keyed", type="openai", base_url=server.url, model=server.model,
                        api_key_env="CAPTION_KEY_ALPHA_VISION")
        run = caption_runs.start_run(shapes, member, "keyed", None, "uncaptioned", [])
        execute_run(str(run.uuid), FAST)
    assert CaptionRun.objects.get(pk=run.pk).done == 6


def test_requests_run_concurrently_up_to_the_providers_limit(team_a, member):
    dataset = make_dataset(team_a, member, name="many", count=12, captions=False)
    with FakeCaptionServer("openai", delay=0.15) as server:
        openai_provider(team_a, server, concurrency=4)
        run = caption_runs.start_run(dataset, member, "vision", None, "uncaptioned", [])
        execute_run(str(run.uuid), FAST)
        assert server.max_in_flight == 4
    assert CaptionRun.objects.get(pk=run.pk).done == 12


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_within_one_request_per_thread_and_keeps_what_was_saved(team_a, member):
    dataset = make_dataset(team_a, member, name="slow", count=20, captions=False)
    with FakeCaptionServer("openai", delay=0.2) as server:
        openai_provider(team_a, server, concurrency=2)
        run = caption_runs.start_run(dataset, member, "vision", None, "uncaptioned", [])
        worker = threading.Thread(target=execute_run, args=(str(run.uuid), FAST))
        worker.start()
        deadline = time.monotonic() + 20
        while CaptionRun.objects.get(pk=run.pk).done < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        caption_runs.cancel_run(run)
        sent_at_cancel = len(server.posts())
        worker.join(30)
        sent = len(server.posts())
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    # Each of the two threads finishes the request it has in flight (and at most one it began
    # before the 100 ms status poll saw the cancel); nothing more is sent.
    assert sent - sent_at_cancel <= 2 * 2
    assert run.done < 20 and run.done == Caption.objects.filter(batch=run.uuid).count()
    with pytest.raises(Conflict):
        caption_runs.cancel_run(run)


def test_a_queued_run_is_cancelled_at_once(shapes, member, team_a):
    create_provider(team_a, name="tpl", type="simple")
    run = caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [])
    assert caption_runs.cancel_run(run).status == RunStatus.CANCELLED
    execute_run(str(run.uuid), FAST)
    assert Caption.objects.filter(batch=run.uuid).count() == 0


def test_one_active_run_per_dataset(shapes, member, team_a):
    create_provider(team_a, name="tpl", type="simple")
    caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [])
    with pytest.raises(Conflict, match="being captioned already"):
        caption_runs.start_run(shapes, member, "tpl", None, "overwrite", [])


def test_undo_puts_back_every_caption_the_run_changed(team_a, member):
    dataset = make_dataset(team_a, member, name="undo", count=3, captions=True)
    before = captions_of(dataset)
    create_provider(team_a, name="tpl", type="simple", prompt="a photo of {trigger}")
    run = caption_runs.start_run(dataset, member, "tpl", None, "overwrite", [])
    with pytest.raises(Conflict, match="Cancel the run"):
        caption_runs.undo_run(run, member)
    execute_run(str(run.uuid), FAST)
    assert captions_of(dataset) == ["a photo of shp"] * 3
    run.refresh_from_db()
    assert caption_runs.undo_run(run, member) == {"restored": 3, "skipped_edited_since": 0}
    assert captions_of(dataset) == before
    run.refresh_from_db()
    with pytest.raises(Conflict, match="undone already"):
        caption_runs.undo_run(run, member)


def test_a_run_records_provider_model_prompt_mode_and_steps_as_they_were(shapes, member, team_a):
    provider = create_provider(team_a, name="tpl", type="simple", prompt="{trigger} from {dataset}")
    run = caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [pp.Step("suffix", text="flat")])
    provider.delete()
    run.refresh_from_db()
    assert (run.provider_name, run.provider_type, run.prompt, run.mode) == ("tpl", "simple", "{trigger} from {dataset}",
                                                                             "uncaptioned")
    assert run.postprocess == [{"op": "suffix", "text": "flat"}]
    execute_run(str(run.uuid), FAST)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "deleted" in run.error


def test_a_stale_run_is_resent_once_by_maintenance(shapes, member, team_a, settings):
    from lorasite.broker import get_broker

    broker = get_broker()
    broker.flush_all()
    create_provider(team_a, name="tpl", type="simple")
    run = caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [])
    CaptionRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING,
                                                heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert resume_stale_runs() == 1
    assert resume_stale_runs() == 0  # not again until another stale window has passed
    assert broker.queues["captioning"].qsize() == 1
    broker.flush_all()


def test_a_stale_cancelling_run_is_finished_as_cancelled(shapes, member, team_a):
    create_provider(team_a, name="tpl", type="simple")
    run = caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [])
    CaptionRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLING,
                                                heartbeat_at=timezone.now() - timedelta(minutes=5))
    resume_stale_runs()
    assert CaptionRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_the_actor_on_the_captioning_queue_runs_a_submitted_run(team_a, member):
    import dramatiq

    from lorasite.broker import get_broker

    dataset = make_dataset(team_a, member, name="queued", count=3, captions=False)
    broker = get_broker()
    broker.flush_all()
    create_provider(team_a, name="tpl", type="simple", prompt="a photo of {trigger}, {filename}")
    run = caption_runs.start_run(dataset, member, "tpl", None, "uncaptioned", [])
    worker = dramatiq.Worker(broker, queues={"captioning"}, worker_threads=1)
    worker.start()
    try:
        broker.join("captioning", fail_fast=True, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    assert CaptionRun.objects.get(pk=run.pk).status == RunStatus.COMPLETED
    assert captions_of(dataset) == ["a photo of shp, img0", "a photo of shp, img1", "a photo of shp, img2"]
