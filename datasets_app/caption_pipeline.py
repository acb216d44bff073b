"""The threads of a caption run, without the database: one thread reads and downscales images
ahead of need, `concurrency` threads send them to the provider, and every answer (or per-image
error) lands on one results queue for the coordinating thread to save.

Preparing ahead keeps image decoding off the request path: a sender always has its next image
ready when an answer arrives. A cancel (`stop`) is seen by each sender before its next request
and during any back-off wait."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from datasets_app.captioning.base import CaptionError, CaptionInput, FatalError, ImageError
from datasets_app.captioning.images import prepare_image
from datasets_app.captioning.retry import Cancelled, RetryPolicy, call_with_retries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    item_id: int
    image_uuid: str
    path: str
    name: str


class Pipeline:
    def __init__(self, provider, work: list[Work], prompt: str, policy: RetryPolicy, max_side: int,
                 dataset_name: str, trigger: str, threads: int):
        self.provider, self.prompt, self.policy, self.max_side = provider, prompt, policy, max_side
        self.dataset_name, self.trigger = dataset_name, trigger
        size = max(1, provider.batch_size)
        self.chunks = [work[i:i + size] for i in range(0, len(work), size)]
        self.threads = threads
        self.results: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.fatal: list[str] = []
        # A little ahead of the senders, not the whole dataset in memory.
        self._ready: queue.Queue = queue.Queue(maxsize=threads * 2)
        self._workers: list[threading.Thread] = []

    def start(self) -> Pipeline:
        self._workers = [threading.Thread(target=self._prepare, name="caption-prepare", daemon=True)]
        self._workers += [threading.Thread(target=self._send, name=f"caption-send-{n}", daemon=True)
                          for n in range(self.threads)]
        for thread in self._workers:
            thread.start()
        return self

    def finished(self) -> bool:
        return not any(t.is_alive() for t in self._workers) and self.results.empty()

    def join(self) -> None:
        self.stop.set()
        for thread in self._workers:
            thread.join()

    def _put_ready(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self._ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _prepare(self) -> None:
        try:
            for chunk in self.chunks:
                inputs, entries = [], []
                for entry in chunk:
                    try:
                        with open(entry.path, "rb") as handle:
                            data = prepare_image(handle.read(), self.max_side)
                    except Exception as exc:  # unreadable or undecodable: this image fails alone
                        self.results.put((entry, ImageError(f"the image could not be read ({type(exc).__name__})")))
                        continue
                    inputs.append(CaptionInput(data=data, filename=entry.name, dataset=self.dataset_name,
                                               trigger=self.trigger))
                    entries.append(entry)
                if inputs and not self._put_ready((entries, inputs)):
                    return
        finally:
            for _ in range(self.threads):
                self._put_ready(None)

    def _send(self) -> None:
        while not self.stop.is_set():
            try:
                item = self._ready.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            entries, inputs = item
            if self.stop.is_set():
                return
            try:
                answers = call_with_retries(lambda inputs=inputs: self.provider.caption_batch(inputs, self.prompt),
                                            self.policy, self.stop.wait)
            except Cancelled:
                return
            except FatalError as exc:
                self.fatal.append(exc.message)
                self.stop.set()
                return
            except CaptionError as exc:  # retries exhausted: these images fail, the run goes on
                answers = [exc] * len(entries)
            except Exception as exc:
                logger.exception("captioning %s failed", [e.name for e in entries])
                answers = [ImageError(f"unexpected error ({type(exc).__name__})")] * len(entries)
            for entry, answer in zip(entries, answers, strict=True):
                self.results.put((entry, answer))
