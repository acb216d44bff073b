"""Running a caption run on a `captioning` worker: threads call the provider (up to its
concurrency), this thread saves each result as it arrives, heartbeats, watches for a cancel and
streams progress to the dataset's websocket group.

Only the coordinating thread touches the database (one connection per run, whatever the
concurrency); the provider threads read image files and talk HTTP. Re-delivery is safe: the
claim lets one worker hold a run, a dead worker's run is taken over once its heartbeat is stale,
and each result is saved only while its item is still pending.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from datasets_app import caption_lifecycle as lifecycle
from datasets_app import caption_runs
from datasets_app.caption_pipeline import Pipeline, Work
from datasets_app.caption_providers import provider_settings
from datasets_app.captioning import postprocess, tokens
from datasets_app.captioning.base import CaptionError, FatalError
from datasets_app.captioning.registry import build_provider
from datasets_app.captioning.retry import RetryPolicy
from datasets_app.models import CaptionRun, CaptionRunItem, ItemStatus, RunStatus
from datasets_app.storage import media_path
from lorasite.realtime import dataset_group, publish

logger = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 1.0
# How often the coordinating thread reads the run's status: a cancel reaches the provider threads
# this fast, so each stops after the request it has in flight.
STATUS_POLL_SECONDS = 0.1
PUBLISH_INTERVAL = 0.1  # at most ~10 progress messages a second; the last one always goes
SAVE_BATCH = 32


@dataclass
class Progress:
    """Throttled progress messages: counts plus the captions and errors since the last one."""

    run: CaptionRun
    done: int
    failed: int
    captions: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    last_sent: float = 0.0
    on_change: Callable[[int, int, int], None] | None = None

    def add(self, outcome: caption_runs.Outcome) -> None:
        if outcome.error is not None:
            self.failed += 1
            self.errors.append({"image": outcome.image_uuid, "error": outcome.error})
        else:
            self.done += 1
            if outcome.caption is not None:
                count = tokens.count_tokens(outcome.caption)
                self.captions.append({"image": outcome.image_uuid, "caption": outcome.caption,
                                      "tokens": count.count, "tokens_exact": count.exact})
        if self.on_change is not None:
            self.on_change(self.done, self.failed, self.run.total)

    def send(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_sent < PUBLISH_INTERVAL:
            return
        if not force and not self.captions and not self.errors:
            return
        total = self.run.total
        publish(dataset_group(self.run.dataset.uuid), {
            "type": "caption_progress", "run": str(self.run.uuid), "done": self.done, "failed": self.failed,
            "total": total, "percent": round(100 * (self.done + self.failed) / total, 1) if total else 100.0,
            "captions": self.captions, "errors": self.errors})
        self.captions, self.errors, self.last_sent = [], [], now


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def execute_run(run_uuid: str, policy: RetryPolicy | None = None,
                on_change: Callable[[int, int, int], None] | None = None) -> None:
    """Claim the run and caption its pending images; `on_change(done, failed, total)` is called
    after each saved result (the terminal command's progress bar)."""
    run = CaptionRun.objects.filter(uuid=run_uuid).select_related("dataset", "provider").first()
    if run is None:
        return
    me = worker_id()
    claimed = lifecycle.claim(run.pk, me)
    if claimed is None:
        return  # finished, or another live worker has it
    run = CaptionRun.objects.select_related("dataset", "provider").get(pk=run.pk)
    try:
        error = _caption(run, me, policy or RetryPolicy(), on_change)
    except Exception as exc:  # the outermost edge: record the failure on the run
        logger.exception("caption run %s failed", run.uuid)
        error = f"The caption run stopped unexpectedly ({type(exc).__name__}); the worker log has the details."
    lifecycle.finish(run.pk, error=error or "")


def _caption(run: CaptionRun, me: str, policy: RetryPolicy, on_change=None) -> str | None:
    """Caption every pending item; returns the run's error, or None."""
    if run.provider is None:
        return "The provider of this run was deleted."
    try:
        provider = build_provider(provider_settings(run.provider), run.provider.api_key_env)
    except FatalError as exc:
        return exc.message
    steps = caption_runs.steps_from_json(run.postprocess)
    context = postprocess.Context(trigger=run.dataset.trigger_word)
    pending = [Work(i.pk, str(i.image.uuid), str(media_path(i.image.blob.file.name)), i.image.original_name)
               for i in CaptionRunItem.objects.filter(run=run, status=ItemStatus.PENDING)
               .select_related("image__blob").order_by("id")]
    counts = {s: CaptionRunItem.objects.filter(run=run, status=s).count() for s in (ItemStatus.DONE, ItemStatus.FAILED)}
    progress = Progress(run, counts[ItemStatus.DONE], counts[ItemStatus.FAILED], on_change=on_change)
    threads = 1 if provider.batch_size > 1 else max(1, run.provider.concurrency)
    pipeline = Pipeline(provider, pending, run.prompt, policy, run.provider.max_image_side, run.dataset.name,
                        run.dataset.trigger_word, threads).start()
    last_beat = last_poll = time.monotonic()
    try:
        while True:
            for outcome in _save(run, _drain(pipeline.results, timeout=STATUS_POLL_SECONDS), steps, context):
                progress.add(outcome)
            progress.send()
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_SECONDS:
                last_beat = last_poll = now
                if lifecycle.heartbeat(run.pk, me) != RunStatus.RUNNING:
                    pipeline.stop.set()  # cancelling, or another worker took the run over
            elif now - last_poll >= STATUS_POLL_SECONDS:
                last_poll = now
                if lifecycle.status_of(run.pk) != RunStatus.RUNNING:
                    pipeline.stop.set()
            if pipeline.finished():
                break
    finally:
        pipeline.join()
        while not pipeline.results.empty():  # answers that arrived while stopping are kept
            for outcome in _save(run, _drain(pipeline.results, timeout=0), steps, context):
                progress.add(outcome)
        provider.close()
        progress.send(force=True)
    return pipeline.fatal[0] if pipeline.fatal else None


def _drain(results: queue.Queue, timeout: float) -> list:
    out = []
    try:
        out.append(results.get(timeout=timeout) if timeout else results.get_nowait())
        while len(out) < SAVE_BATCH:
            out.append(results.get_nowait())
    except queue.Empty:
        pass
    return out


def _save(run: CaptionRun, batch: list, steps, context) -> list[caption_runs.Outcome]:
    """Save what arrived since the last round in one transaction; if that fails, one by one, so
    one bad row costs only its own image."""
    answers = [caption_runs.Answer(entry.item_id, entry.image_uuid, error=answer.message)
               if isinstance(answer, CaptionError) else
               caption_runs.Answer(entry.item_id, entry.image_uuid, answer.text, answer.model)
               for entry, answer in batch]
    if not answers:
        return []
    try:
        return caption_runs.save_answers(run, answers, steps, context)
    except Exception:
        logger.exception("saving %d captions of run %s failed; saving them one by one", len(answers), run.uuid)
    outcomes = []
    for answer in answers:
        try:
            outcomes += caption_runs.save_answers(run, [answer], steps, context)
        except Exception as exc:
            logger.exception("saving the caption of image %s failed", answer.image_uuid)
            failed = dataclasses.replace(answer, error=f"the caption could not be saved ({type(exc).__name__})")
            outcomes += caption_runs.save_answers(run, [failed], steps, context)
    return outcomes
