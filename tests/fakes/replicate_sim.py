"""The moving parts behind the Replicate fake: a training that advances with time, and webhook delivery.

A training goes starting → processing → succeeded | failed | canceled on a clock the test chooses
(`TrainingPlan`), appending the trainer's own log lines as it goes. Webhooks are POSTed from one
sender thread, signed as Replicate signs them (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>` with the key from `whsec_…`),
or deliberately not (unsigned, stale, duplicated, wrongly signed) when a test asks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import queue
import secrets
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.fakes.replicate_trainers import (
    FLUX_TRAINER,
    Trainer,
    effective_input,
    failure_lines,
    preamble_lines,
    progress_line,
    weights_tar,
)

TERMINAL = ("succeeded", "failed", "canceled")
WEBHOOK_MODES = ("signed", "unsigned", "stale", "duplicated", "wrong_secret")
EVENTS = ("start", "output", "logs", "completed")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class TrainingPlan:
    """How the next training behaves: its pace, and whether (and where) it stops."""

    start_delay_s: float = 0.02
    seconds_per_step: float = 0.002
    fail_at_step: int | None = None
    error: str = "CUDA out of memory. Tried to allocate 2.00 GiB"
    pause_at_step: int | None = None  # stays processing there until FakeReplicate.release()
    log_every: int = 1


@dataclass
class SimTraining:
    """One training on the fake and everything it has done so far."""

    id: str
    trainer: Trainer
    destination: str
    input: dict[str, Any]
    plan: TrainingPlan
    webhook: str | None
    events: tuple[str, ...]
    dataset: dict[str, bytes] | None  # the unzipped input_images, None when they could not be read
    created: float = field(default_factory=time.time)
    created_mono: float = field(default_factory=time.monotonic)
    status: str = "starting"
    logs: list[str] = field(default_factory=list)
    error: str | None = None
    output: dict[str, str] | None = None
    started: float | None = None
    processing_mono: float | None = None
    completed: float | None = None
    step: int = 0
    released: bool = False
    weights: bytes | None = None
    last_logs_webhook: float = 0.0

    @property
    def total_steps(self) -> int:
        return int(effective_input(self.trainer, self.input)[self.trainer.steps_input])

    @property
    def captions(self) -> dict[str, str]:
        names = self.dataset or {}
        return {name.rsplit(".", 1)[0]: payload.decode() for name, payload in names.items() if name.endswith(".txt")}

    @property
    def image_count(self) -> int:
        return sum(1 for name in (self.dataset or {}) if name.lower().endswith(IMAGE_SUFFIXES))

    def advance(self, now_mono: float, delivery_url: str) -> list[str]:
        """Move on to where the clock says this training is; return the webhook events that fired."""
        events: list[str] = []
        if self.status == "starting" and now_mono - self.created_mono >= self.plan.start_delay_s:
            self._start()
            events.append("logs")
        if self.status != "processing" or self.processing_mono is None:
            return events
        total = self.total_steps
        target = min(total, int((now_mono - self.processing_mono) / max(self.plan.seconds_per_step, 1e-6)))
        if self.plan.pause_at_step is not None and not self.released:
            target = min(target, self.plan.pause_at_step)
        lr = float(effective_input(self.trainer, self.input).get("learning_rate", 1e-4))
        grew = False
        while self.step < target:
            self.step += 1
            if self.step % self.plan.log_every == 0 or self.step == total:
                self.logs.append(progress_line(self.trainer, self.step, total, self.plan.seconds_per_step, lr))
                grew = True
            if self.plan.fail_at_step is not None and self.step >= self.plan.fail_at_step:
                self.finish_failed(self.plan.error)
                return [*events, "completed"]
        if grew:
            events.append("logs")
        if self.step >= total:
            self._succeed(delivery_url)
            events += ["output", "completed"]
        return events

    def _start(self) -> None:
        self.started = time.time()
        if self.dataset is None:
            self.finish_failed("input_images must be a zip file")
            return
        self.status = "processing"
        self.processing_mono = time.monotonic()
        self.logs += preamble_lines(self.trainer, self.image_count)

    def finish_failed(self, error: str) -> None:
        self.status, self.error, self.completed = "failed", error, time.time()
        self.logs += failure_lines(error)

    def cancel(self) -> bool:
        if self.status in TERMINAL:
            return False
        self.status, self.completed = "canceled", time.time()
        self.logs.append("Training canceled")
        return True

    def _succeed(self, delivery_url: str) -> None:
        rank = int(effective_input(self.trainer, self.input)[self.trainer.rank_input])
        self.weights = weights_tar(self.trainer, rank, self.id, self.captions)
        self.logs.append("Saved LoRA to trained_model.tar" if self.trainer is FLUX_TRAINER else "Saving final model")
        self.status, self.completed = "succeeded", time.time()
        version = hashlib.sha256(self.id.encode()).hexdigest()
        self.output = {"version": f"{self.destination}:{version}",
                       "weights": f"{delivery_url}/{self.id}/trained_model.tar"}

    def to_json(self, api_url: str) -> dict[str, Any]:
        metrics: dict[str, float] = {}
        if self.started is not None and self.completed is not None and self.status == "succeeded":
            metrics = {"predict_time": round(self.completed - self.started, 6),
                       "total_time": round(self.completed - self.created, 6)}
        return {
            "id": self.id, "model": f"{self.trainer.owner}/{self.trainer.name}", "version": self.trainer.version,
            "destination": self.destination, "input": self.input, "logs": "\n".join(self.logs),
            "error": self.error, "status": self.status, "source": "api", "output": self.output,
            "metrics": metrics, "webhook": self.webhook, "webhook_events_filter": list(self.events),
            "created_at": iso(self.created), "started_at": iso(self.started), "completed_at": iso(self.completed),
            "urls": {"get": f"{api_url}/v1/trainings/{self.id}", "cancel": f"{api_url}/v1/trainings/{self.id}/cancel",
                     "web": f"{api_url}/p/{self.id}"},
        }


def read_dataset(payload: bytes | None) -> dict[str, bytes] | None:
    """The zip's regular files by base name (what the trainers extract), None when it is not a zip."""
    if payload is None:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            return {info.filename.rsplit("/", 1)[-1]: archive.read(info) for info in archive.infolist()
                    if not info.is_dir() and not info.filename.startswith("__MACOSX/")}
    except zipfile.BadZipFile:
        return None


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<signature>` for one delivery, as Replicate computes it."""
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Delivery:
    """One webhook POST the fake made, and what the receiver answered (or the transport error)."""

    event: str
    training_id: str
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    status_code: int | None
    error: str | None = None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class WebhookSender:
    """POSTs deliveries one at a time from a daemon thread, in the order events happened."""

    def __init__(self, secret: str, mode: str = "signed"):
        self.secret = secret
        self.mode = mode
        self.deliveries: list[Delivery] = []
        self._queue: queue.Queue[tuple[str, str, str, bytes] | None] = queue.Queue()
        # Generous: a portal on a loaded machine may answer slowly, and a lost delivery is not what is tested.
        self._http = httpx.Client(timeout=httpx.Timeout(10.0), follow_redirects=False)
        self._thread = threading.Thread(target=self._run, name="fake-replicate-webhooks", daemon=True)
        self._thread.start()

    def send(self, url: str, event: str, training_id: str, body: bytes) -> None:
        self._queue.put((url, event, training_id, body))

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued delivery has been attempted."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
        self._http.close()

    def _headers(self, webhook_id: str, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": "Replicate-Webhooks/fake"}
        if self.mode == "unsigned":
            return headers
        timestamp = str(int(time.time()) - (3600 if self.mode == "stale" else 0))
        secret = self.secret
        if self.mode == "wrong_secret":
            secret = "whsec_" + base64.b64encode(b"not-the-account-secret-000000000").decode()
        headers.update({"webhook-id": webhook_id, "webhook-timestamp": timestamp,
                        "webhook-signature": sign(secret, webhook_id, timestamp, body)})
        return headers

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                url, event, training_id, body = item
                webhook_id = "msg_" + secrets.token_urlsafe(18)
                headers = self._headers(webhook_id, body)
                for _ in range(2 if self.mode == "duplicated" else 1):
                    self._post(url, event, training_id, webhook_id, headers, body)
            finally:
                self._queue.task_done()

    def _post(self, url: str, event: str, training_id: str, webhook_id: str, headers: dict[str, str],
              body: bytes) -> None:
        try:
            response = self._http.post(url, content=body, headers=headers)
            self.deliveries.append(Delivery(event, training_id, webhook_id, headers, body, response.status_code))
        except httpx.HTTPError as exc:
            self.deliveries.append(Delivery(event, training_id, webhook_id, headers, body, None, repr(exc)))
