"""The Replicate backend: trains Flux and SDXL LoRAs with a trainer model on Replicate, over its HTTP API.

The frozen dataset is zipped and uploaded (`POST /v1/files`), the destination model is created if
missing, and the training is started on the trainer version configured for the base model's family.
It is followed by polling `GET /v1/trainings/{id}`, or, when the portal has a public address
(SITE_URL), from the webhook deliveries the portal receives (replicate_hooks), with a slow poll as a
safety net. Step and loss come from the trainer's tqdm lines; the LoRA is unpacked from `output.weights`.

The HTTP calls, the input mapping and the archives are Django-free modules (replicate_api,
replicate_inputs, replicate_archives); this class wires them to jobs through the shared remote driver.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training_app.backends import replicate_state as state
from training_app.backends.base import (
    Availability,
    BackendError,
    Finished,
    LogLines,
    Progress,
    RemoteRun,
    RunOutcome,
    Waiting,
)
from training_app.backends.remote import run_remote
from training_app.backends.replicate_api import (
    MODEL_REF,
    TRAINER_REF,
    ReplicateClient,
    ReplicateError,
    Timeouts,
    Training,
)
from training_app.backends.replicate_inputs import (
    PRICE_PER_SECOND,
    TrainerInputs,
    UnmappableConfig,
    actual_cost,
    estimate_cost,
    input_problems,
    map_inputs,
    parse_progress,
    tqdm_position,
)
from training_app.config import TrainingConfig
from training_app.models import BackendConfig, JobLog

FAMILIES = ("flux", "sdxl")
DEFAULT_TRAINERS = {
    "flux": "ostris/flux-dev-lora-trainer",  # no version: the model's latest, looked up at submit
    "sdxl": "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
}
# Typical seconds per training step on an H100 at 1024 px (the portal's own estimate anchors).
DEFAULT_SECONDS_PER_STEP = {"flux": 1.6, "sdxl": 0.6}
MODEL_ONLY = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
STATES = {"starting": "pending", "processing": "running", "succeeded": "succeeded", "failed": "failed",
          "canceled": "cancelled"}
TICK_SECONDS = 0.25  # how often the follow loop looks at the stop flag and the webhook row
MAX_POLL_FAILURES = 10  # consecutive failed polls before the job is re-queued (it re-attaches)
LOOKUP_WAITS = (0.5, 1.0, 2.0, 4.0)  # after a create call with an unknown outcome, look for its training


class ReplicateOptions(BaseModel):
    """`options` of a Replicate BackendConfig."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    destination: str = Field(description="owner/name of the model the trained versions go to (created if missing)")
    trainers: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TRAINERS),
                                     description="family -> owner/model[:version] of the trainer")
    hardware: str = Field(default="gpu-h100", description="what the trainer runs on (prices the run)")
    price_per_second: float | None = Field(default=None, gt=0, le=1, description="US$; default: the hardware's")
    seconds_per_step: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SECONDS_PER_STEP))
    startup_seconds: float = Field(default=90.0, ge=0, le=3600, description="billed boot + model load, for estimates")
    poll_seconds: float = Field(default=5.0, ge=0.05, le=300, description="poll interval without webhooks")
    webhook_poll_seconds: float = Field(default=60.0, ge=0.05, le=3600,
                                        description="safety poll interval while webhooks feed the job")
    webhook_tolerance_seconds: float = Field(default=300.0, ge=10, le=3600)
    max_upload_mb: int = Field(default=100, ge=1, le=2048)

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if not MODEL_REF.match(value or ""):
            raise ValueError("owner/name of a Replicate model (lowercase name), e.g. acme/loras")
        return value

    @field_validator("trainers")
    @classmethod
    def _trainers(cls, value: dict[str, str]) -> dict[str, str]:
        for family, ref in value.items():
            if family not in FAMILIES:
                raise ValueError(f"trainers are per family: {', '.join(FAMILIES)}, not {family!r}")
            if not (TRAINER_REF.match(ref or "") or MODEL_ONLY.match(ref or "")):
                raise ValueError(f"{family}: owner/model or owner/model:<64-hex version>, not {ref!r}")
        return {**DEFAULT_TRAINERS, **value}

    @field_validator("seconds_per_step")
    @classmethod
    def _seconds(cls, value: dict[str, float]) -> dict[str, float]:
        for family, seconds in value.items():
            if family not in FAMILIES or not 0 < float(seconds) <= 600:
                raise ValueError(f"family ({', '.join(FAMILIES)}) -> seconds between 0 and 600")
        return {**DEFAULT_SECONDS_PER_STEP, **{k: float(v) for k, v in value.items()}}

    @model_validator(mode="after")
    def _priced(self) -> ReplicateOptions:
        if self.price_per_second is None and self.hardware not in PRICE_PER_SECOND:
            raise ValueError(f"hardware {self.hardware!r} has no known price: give price_per_second, or use "
                             f"{', '.join(PRICE_PER_SECOND)}")
        return self


def to_backend_error(exc: ReplicateError) -> BackendError:
    return BackendError(exc.message, retryable=exc.retryable, retry_after=exc.retry_after)


@contextmanager
def speaking_replicate() -> Iterator[None]:
    """Every ReplicateError inside becomes the BackendError the job records (same words, same retry)."""
    try:
        yield
    except ReplicateError as exc:
        raise to_backend_error(exc) from None


def webhook_url(config: BackendConfig) -> str | None:
    site = (settings.SITE_URL or "").rstrip("/")
    return f"{site}/api/webhooks/replicate/{config.uuid}" if site else None


class ReplicateBackend:
    kind = "replicate"
    queue = "remote"
    actor_name = "run_remote_job"
    families = FAMILIES
    paid = True
    Options = ReplicateOptions

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.name
        self.options = ReplicateOptions(**(config.options or {}))
        self.label = f"Replicate ({self.options.destination})"
        self.price_per_second = self.options.price_per_second or PRICE_PER_SECOND[self.options.hardware]

    def client(self, *, retries: int = 2, timeout: float | None = None) -> ReplicateClient:
        token = os.environ.get(self.config.token_env, "") if self.config.token_env else ""
        if not token:
            raise BackendError("No Replicate API token here: the environment variable this backend names is not "
                               "set for the web and worker processes.")
        seconds = timeout or self.config.request_timeout_seconds
        timeouts = Timeouts(connect=min(5.0, seconds), read=seconds, write=seconds, pool=seconds)
        return ReplicateClient(self.config.base_url, token, timeouts, retries=retries)

    # -- every backend -------------------------------------------------------------------------
    def availability(self) -> Availability:
        try:
            # No retries: a page listing backends must not sit out a rate limit.
            with self.client(retries=0, timeout=min(5.0, self.config.request_timeout_seconds)) as api:
                account = api.account()
        except ReplicateError as exc:
            return Availability(False, exc.message)
        except BackendError as exc:
            return Availability(False, exc.message)
        facts = {"account": account.username, "account_type": account.type, "hardware": self.options.hardware,
                 "price_per_second": self.price_per_second, "webhooks": webhook_url(self.config) is not None}
        return Availability(True, f"Replicate account {account.username}; trains on {self.options.hardware} "
                                  f"at ${self.price_per_second:.6f}/s", facts)

    def validate(self, config: TrainingConfig, base_model, total_steps: int | None = None) -> list[dict[str, Any]]:
        family = base_model.family
        if family not in self.families:
            return [{"loc": ["base_model"], "msg": f"Replicate trains {' and '.join(self.families)} LoRAs here, "
                                                   f"not {family}; use another backend"}]
        values = config.model_dump()
        if total_steps and not values.get("max_steps"):
            values["max_steps"] = total_steps
        return input_problems(values, family)

    def estimate_cost(self, config, total_steps, base_model) -> float | None:
        family = base_model.family if base_model is not None else "flux"
        if family not in self.families or not total_steps:
            return None
        return estimate_cost(int(total_steps), self.options.seconds_per_step[family], self.price_per_second,
                             overhead_s=self.options.startup_seconds)

    def run(self, job, reporter) -> RunOutcome:
        return run_remote(self, job, reporter, overall_timeout=self.config.overall_timeout_seconds)

    def cancel(self, job) -> None:
        if job.remote_id:
            self.cancel_run(job, job.remote_id)

    def logs(self, job) -> list[str]:
        # What the trainer printed is streamed into the job's log as it arrives.
        return list(JobLog.objects.filter(job=job).order_by("id").values_list("line", flat=True))

    # -- remote runs ---------------------------------------------------------------------------
    def find_run(self, job, remote_id: str | None) -> RemoteRun | None:
        with self.client() as api, speaking_replicate():
            if remote_id:
                try:
                    return _remote_run(api.get_training(remote_id))
                except ReplicateError as exc:
                    if exc.status == 404:
                        return None
                    raise
            tag = state.pending_tag(job)
            found = api.find_training(tag) if tag else None
            return _remote_run(found) if found is not None else None

    def submit(self, job, reporter, record) -> str:
        family = job.base_model.family
        destination = self.options.destination
        mapped = self.trainer_inputs(job)
        with self.client() as api, speaking_replicate():
            trainer = self._trainer_version(api, family, reporter)
            for note in mapped.notes:
                reporter.log(note)
            owner, name = destination.split("/")
            if api.ensure_model(owner, name):
                reporter.log(f"created the destination model {destination} on Replicate (private)")
            upload = self._upload(api, job, reporter, mapped.caption_csv)
            inputs = {**mapped.inputs, "input_images": upload}
            hook = webhook_url(self.config)
            try:
                training = api.create_training(trainer, destination, inputs, webhook_url=hook)
            except ReplicateError as exc:
                if not exc.may_have_started:
                    raise
                training = self._look_for(api, upload, exc, reporter)
            record(training.id)
            state.attach(job, training.id)
            reporter.log(f"Replicate training {training.id} of {trainer.split(':')[0]} into {destination}"
                         + (" (webhooks on)" if hook else ""))
        return training.id

    def trainer_inputs(self, job) -> TrainerInputs:
        images = job.snapshot["images"]
        has_captions = all((image.get("caption") or "").strip() for image in images)
        # Our own step count (planned from the dataset's buckets) is what the trainer runs and what
        # its progress bar is matched against.
        config = {**job.config, "max_steps": job.total_steps}
        trigger = (job.config.get("trigger_word") or "").strip() or "TOK"
        try:
            return map_inputs(config, job.base_model.family, trigger, has_captions, image_count=len(images))
        except UnmappableConfig as exc:
            raise BackendError(exc.message) from None

    def _trainer_version(self, api: ReplicateClient, family: str, reporter) -> str:
        ref = self.options.trainers.get(family)
        if not ref:
            raise BackendError(f"This Replicate backend has no trainer for {family} (option trainers.{family}).")
        if TRAINER_REF.match(ref):
            return ref
        version = api.latest_version(ref)
        reporter.log(f"using the latest version of {ref}: {version[:12]}… (pin one with option trainers)")
        return f"{ref}:{version}"

    def _upload(self, api: ReplicateClient, job, reporter, caption_csv: bool) -> str:
        reused = state.reusable_upload(job)
        if reused:
            reporter.log("reusing the dataset the previous attempt uploaded")
            return reused
        items = []
        for image in job.snapshot["images"]:
            path = Path(settings.MEDIA_ROOT) / image["storage_name"]
            if not path.is_file():
                raise BackendError(f"An image of the dataset snapshot is missing from storage ({image['id']}).")
            items.append((path, image.get("caption") or ""))
        started = time.monotonic()
        uploaded = api.upload_dataset(items, caption_csv=caption_csv,
                                      max_bytes=self.options.max_upload_mb * 1024 ** 2)
        # Committed before the training exists: the job's tag, should the create call's answer be lost.
        state.remember_upload(job, reporter.worker_id, uploaded.url)
        reporter.log(f"uploaded {len(items)} images ({uploaded.size / 1024 ** 2:.1f} MB zip"
                     + (", captions in caption.csv" if caption_csv else "")
                     + f") to Replicate in {time.monotonic() - started:.1f} s")
        return uploaded.url

    def _look_for(self, api: ReplicateClient, upload: str, exc: ReplicateError, reporter) -> Training:
        """The create call's outcome is unknown: find the training by the job's upload, never create another."""
        reporter.log(f"{exc.message} Looking for the training before anything else.")
        for wait in LOOKUP_WAITS:
            time.sleep(wait)
            found = api.find_training(upload)
            if found is not None:
                reporter.log(f"found the training {found.id} the unanswered create call started")
                return found
        raise BackendError(f"{exc.message} No training of this job shows on Replicate yet; the next attempt looks "
                           "for it again before it would create one.", retryable=True, retry_after=exc.retry_after)

    def follow(self, job, remote_id: str, reporter) -> Iterator:
        reader = _LogReader(job, state.attach(job, remote_id), self._learning_rate(job))
        hook = webhook_url(self.config) is not None
        poll_every = self.options.webhook_poll_seconds if hook else self.options.poll_seconds
        seen_at = None
        last_poll = -1e9
        failures = 0
        with self.client() as api:
            while True:
                training = None
                if hook:
                    body, at = state.delivered_since(job, seen_at)
                    if body is not None and body.get("id") == remote_id:
                        seen_at, training = at, _training(body)
                if training is None and time.monotonic() - last_poll >= poll_every:
                    last_poll = time.monotonic()
                    try:
                        training = api.get_training(remote_id)
                        failures = 0
                    except ReplicateError as exc:
                        failures += 1
                        if exc.status == 404 or not exc.retryable or failures >= MAX_POLL_FAILURES:
                            yield Finished("failed", exc.message, retryable=exc.retryable)
                            return
                        if failures == 1:
                            yield LogLines((f"{exc.message} (polling again)",))
                if training is not None:
                    yield from reader.events(training)
                    if training.done:
                        return
                yield Waiting()
                time.sleep(TICK_SECONDS)

    @staticmethod
    def _learning_rate(job) -> float | None:
        # The Flux trainer runs a constant learning rate: what its bar prints is the configured one.
        return float(job.config.get("learning_rate") or 0) if job.base_model.family == "flux" else None

    def cancel_run(self, job, remote_id: str) -> None:
        with self.client() as api, speaking_replicate():
            api.cancel_training(remote_id)

    def fetch_weights(self, job, remote_id: str, target_dir: Path) -> Path:
        with self.client(timeout=max(60.0, self.config.request_timeout_seconds)) as api, speaking_replicate():
            training = api.get_training(remote_id)
            if not training.weights_url:
                raise BackendError(f"The Replicate training {remote_id} succeeded but names no weights file.")
            return api.download_weights(training.weights_url, Path(target_dir)).lora_path

    def run_cost(self, metrics) -> float | None:
        return actual_cost(metrics.get("predict_time"), self.price_per_second)


def _training(body: dict[str, Any]) -> Training | None:
    try:
        return Training.from_json(body)
    except ReplicateError:
        return None


def _remote_run(training: Training) -> RemoteRun:
    return RemoteRun(training.id, STATES.get(training.status, "running"), training.error or "")


def _finished(training: Training) -> Finished:
    metrics = {"predict_time": training.predict_time} if training.predict_time is not None else {}
    if training.status == "succeeded":
        return Finished("succeeded", metrics=metrics)
    if training.status == "canceled":
        return Finished("cancelled", metrics=metrics)
    # A failed training is billed: running it again is the user's call (Retry), never automatic.
    error = (training.error or "").strip() or "Replicate gave no reason"
    return Finished("failed", f"The Replicate training {training.id} failed: {error}", metrics=metrics)


class _LogReader:
    """Turns the growing `logs` of a training into new log lines, progress points and the final event."""

    def __init__(self, job, cursor: int, lr: float | None):
        self.job, self.cursor, self.lr = job, cursor, lr
        self.total = job.total_steps
        self.shown_tenth = -1  # the training bar is logged at every tenth of the run, not every step
        self.step = 0

    def events(self, training: Training) -> Iterator:
        read = parse_progress(training.logs, self.total, self.cursor, final=training.done)
        lines = tuple(line for line in read.lines if self._worth_logging(line))
        if lines:
            yield LogLines(lines)
        for step, loss in read.points:
            self.step = step
            yield Progress(step, self.total, loss, self.lr if loss is not None else None)
        if not training.done:
            # The newest bar may not have ended its line yet: its step counts now, its loss (maybe cut
            # short mid-number) only once the line is complete.
            tail = parse_progress(training.logs, self.total, read.cursor, final=True)
            if tail.step is not None and tail.step > self.step:
                self.step = tail.step
                yield Progress(tail.step, self.total)
        if read.cursor != self.cursor:
            self.cursor = read.cursor
            state.save_cursor(self.job, read.cursor)
        if training.done:
            if training.status == "succeeded" and read.step != self.total:
                yield Progress(self.total, self.total)
            yield _finished(training)

    def _worth_logging(self, line: str) -> bool:
        bar = tqdm_position(line)
        if bar is None:
            return True
        step, total = bar
        if total != self.total:
            return step == total  # other bars (latent caching, downloads): only once finished
        tenth = 10 * step // max(total, 1)
        if tenth > self.shown_tenth:
            self.shown_tenth = tenth
            return True
        return False
