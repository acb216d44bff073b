"""The ComfyUI backend: trains with a ComfyUI server's native LoRA nodes, over its HTTP + websocket API.

The frozen dataset is uploaded into a job-unique input subfolder, the workflow is built from the
server's /object_info (comfyui_workflow), and the run is followed on /ws with our own client id,
falling back to polling /history when the socket drops. The LoRA comes back through /view.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field

from training_app.backends import comfyui_workflow as workflow
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
from training_app.backends.comfyui_api import ComfyUIClient, ComfyUIError, PromptRejected, read_message
from training_app.backends.remote import run_remote
from training_app.config import TrainingConfig
from training_app.models import BackendConfig, JobLog

POLL_SECONDS = 0.5
CHECK_SECONDS = 2.0  # while the socket is quiet, how often to ask whether the prompt still exists


class ComfyUIOptions(BaseModel):
    """`options` of a ComfyUI BackendConfig."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    checkpoints: dict[str, str] = Field(default_factory=dict,
                                        description="base model name -> checkpoint file the server lists")
    upload_concurrency: int = Field(default=8, ge=1, le=64)
    no_progress_notice_seconds: float = Field(default=20.0, ge=0.1, le=3600,
                                              description="say in the log when training sends no step progress")


def _error_text(exc: ComfyUIError) -> str:
    return f"ComfyUI: {exc.message}"


class ComfyUIBackend:
    kind = "comfyui"
    queue = "remote"
    actor_name = "run_remote_job"
    families = ("sd15", "sdxl", "flux")
    paid = False
    Options = ComfyUIOptions

    def __init__(self, config: BackendConfig):
        self.config = config
        self.name = config.name
        self.options = ComfyUIOptions(**(config.options or {}))
        self.label = f"ComfyUI server at {urlsplit(config.base_url).netloc}"
        self._withdrawn: set[str] = set()  # prompts we deleted from the queue before they ran
        self._sockets: dict[str, Any] = {}  # opened before POST /prompt, so no message is missed

    def client(self, timeout: float | None = None) -> ComfyUIClient:
        token = os.environ.get(self.config.token_env) if self.config.token_env else None
        return ComfyUIClient(self.config.base_url, token=token, timeout=timeout or self.config.request_timeout_seconds,
                             max_connections=max(4, self.options.upload_concurrency))

    # -- every backend -------------------------------------------------------------------------
    def availability(self) -> Availability:
        try:
            with self.client(timeout=min(5.0, self.config.request_timeout_seconds)) as api:
                stats = api.system_stats()
        except ComfyUIError as exc:
            return Availability(False, _error_text(exc))
        version = (stats.get("system") or {}).get("comfyui_version") or "unknown version"
        devices = stats.get("devices") or []
        facts: dict[str, Any] = {"version": version}
        detail = f"ComfyUI {version}"
        if devices:
            device = devices[0]
            facts.update(device=device.get("name"), vram_free=device.get("vram_free"),
                         vram_total=device.get("vram_total"))
            if device.get("vram_free") is not None:
                detail += f", {device['vram_free'] / 1024 ** 3:.1f} GiB free on {device.get('name') or 'its device'}"
        return Availability(True, detail, facts)

    def validate(self, config: TrainingConfig, base_model, total_steps: int | None = None) -> list[dict[str, Any]]:
        if base_model.family not in self.families:
            return [{"loc": ["base_model"], "msg": f"ComfyUI trains {', '.join(self.families)} models"}]
        checkpoint = self.options.checkpoints.get(base_model.name)
        try:
            with self.client(timeout=min(10.0, self.config.request_timeout_seconds)) as api:
                info = api.object_info()
        except ComfyUIError:
            # The server may be off right now: the worker checks again before it submits.
            return [] if checkpoint else [{"loc": ["base_model"], "msg": f"this ComfyUI backend has no checkpoint "
                                           f"configured for {base_model.name} (option checkpoints.{base_model.name})"}]
        return workflow.check_config(info, config.model_dump(), checkpoint)

    def estimate_cost(self, config, total_steps, base_model) -> float | None:
        return None  # the team's own server

    def run(self, job, reporter) -> RunOutcome:
        return run_remote(self, job, reporter, overall_timeout=self.config.overall_timeout_seconds)

    def cancel(self, job) -> None:
        if job.remote_id:
            self.cancel_run(job, job.remote_id)

    def logs(self, job) -> list[str]:
        # ComfyUI keeps no per-prompt log; what it told us over the socket is in the job's log.
        return list(JobLog.objects.filter(job=job).order_by("id").values_list("line", flat=True))

    # -- remote runs ---------------------------------------------------------------------------
    @staticmethod
    def client_id(job) -> str:
        # Stable per job: a successor worker's socket receives the same prompt's messages.
        return f"lorasite-{job.uuid.hex}"

    @staticmethod
    def folder(job) -> str:
        return f"lorasite-{job.uuid.hex}"

    @staticmethod
    def prefix(job, remote_id: str) -> str:
        return f"loras/lorasite-{job.uuid.hex[:12]}-{remote_id[:8]}"

    def find_run(self, job, remote_id: str | None) -> RemoteRun | None:
        with self.client() as api:
            try:
                return _find(api, job, remote_id)
            except ComfyUIError as exc:
                raise BackendError(_error_text(exc), retryable=exc.retryable) from None

    def submit(self, job, reporter, record) -> str:
        checkpoint = self.options.checkpoints.get(job.base_model.name)
        values = TrainingConfig(**job.config).model_dump()
        prompt_id = str(uuid.uuid4())
        with self.client() as api:
            try:
                info = api.object_info()
                graph = workflow.build(info, checkpoint=checkpoint or "", folder=self.folder(job),
                                       prefix=self.prefix(job, prompt_id), values=values, steps=job.total_steps)
                _log_unapplied(reporter, values)
                self._upload_dataset(api, job, reporter)
                record(prompt_id)  # committed before the server hears of it
                self._listen_early(api, job, prompt_id)
                api.queue_prompt(graph, self.client_id(job), prompt_id, extra_data={"extra_pnginfo": {
                    "lorasite_job": str(job.uuid), "config_sha256": _config_hash(job.config),
                    "dataset_sha256": job.snapshot_sha256}})
            except workflow.WorkflowError as exc:
                self._drop_socket(prompt_id)
                raise BackendError(f"This ComfyUI server cannot run the job: {exc}") from None
            except PromptRejected as exc:
                self._drop_socket(prompt_id)
                raise BackendError(describe_rejection(exc)) from None
            except ComfyUIError as exc:
                self._drop_socket(prompt_id)
                raise BackendError(_error_text(exc), retryable=exc.retryable) from None
        return prompt_id

    def _listen_early(self, api: ComfyUIClient, job, prompt_id: str) -> None:
        try:
            self._sockets[prompt_id] = api.open_socket(self.client_id(job))
        except ComfyUIError:
            pass  # follow() tries again, then polls

    def _drop_socket(self, prompt_id: str) -> None:
        socket = self._sockets.pop(prompt_id, None)
        if socket is not None:
            socket.close()

    def _upload_dataset(self, api: ComfyUIClient, job, reporter) -> None:
        trigger = (job.config.get("trigger_word") or "").strip()
        files: list[tuple[str, bytes | Path]] = []
        empty = 0
        for index, image in enumerate(job.snapshot["images"]):
            path = Path(settings.MEDIA_ROOT) / image["storage_name"]
            if not path.is_file():
                raise BackendError(f"An image of the dataset snapshot is missing from storage ({image['id']}).")
            caption = (image.get("caption") or "").strip()
            if not caption:
                empty += 1
                # ComfyUI pairs an image without a caption with an extra conditioning and fails the run.
                caption = trigger or "a photo"
            stem = f"{index:05d}"
            files.append((f"{stem}{path.suffix.lower() or '.png'}", path))
            files.append((f"{stem}.txt", caption.encode()))
        if empty:
            reporter.log(f"{empty} image(s) had no caption; they train with {trigger or 'a photo'!r} as caption")
        started = time.monotonic()
        sent = api.upload_many(files, self.folder(job), concurrency=self.options.upload_concurrency)
        reporter.log(f"uploaded {len(files) // 2} images with captions ({sent / 1024 ** 2:.1f} MB) to "
                     f"input/{self.folder(job)} in {time.monotonic() - started:.1f} s")

    def follow(self, job, remote_id: str, reporter) -> Iterator:
        with self.client() as api:
            yield from _follow(api, job, remote_id, self.client_id(job), self.options.no_progress_notice_seconds,
                               self._withdrawn, self._sockets.pop(remote_id, None))

    def cancel_run(self, job, remote_id: str) -> None:
        with self.client() as api:
            try:
                pending = [item[1] for item in api.queue().get("queue_pending", [])]
                if remote_id in pending:
                    api.delete_from_queue([remote_id])
                    self._withdrawn.add(remote_id)
                else:
                    api.interrupt(remote_id)
            except ComfyUIError as exc:
                raise BackendError(_error_text(exc), retryable=exc.retryable) from None

    def fetch_weights(self, job, remote_id: str, target_dir: Path) -> Path:
        subfolder, _, name = self.prefix(job, remote_id).rpartition("/")
        candidates = [f"{name}_{job.total_steps}_steps_00001_.safetensors", f"{name}_00001_.safetensors"]
        with self.client(timeout=max(60.0, self.config.request_timeout_seconds)) as api:
            for filename in candidates:
                try:
                    got = api.download(filename, subfolder, Path(target_dir) / filename)
                except ComfyUIError as exc:
                    raise BackendError(_error_text(exc), retryable=exc.retryable) from None
                if got is not None:
                    return got
        raise BackendError(f"The ComfyUI run finished but its LoRA file ({candidates[0]} in output/{subfolder}) "
                           "is not on the server.")

    def run_cost(self, metrics) -> float | None:
        return None


def _config_hash(config: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


# Our settings ComfyUI's TrainLoraNode has no input for; said in the log when they differ from the default.
_UNAPPLIED = ("text_encoder_lr", "train_text_encoder", "noise_offset", "min_snr_gamma", "caption_dropout",
              "flip_aug", "shuffle_tags", "lr_warmup_steps", "alpha", "dropout")


def _log_unapplied(reporter, values: dict[str, Any]) -> None:
    defaults = TrainingConfig().model_dump()
    changed = [k for k in _UNAPPLIED if k in values and values[k] != defaults.get(k)]
    if changed:
        reporter.log(f"not applied on ComfyUI (its trainer has no such input): {', '.join(changed)}")


def describe_rejection(exc: PromptRejected) -> str:
    """A 400 from /prompt in words: which node and which input the server refused."""
    parts = []
    for node_id, entry in (exc.node_errors or {}).items():
        for err in entry.get("errors") or []:
            input_name = (err.get("extra_info") or {}).get("input_name") or "?"
            details = err.get("details") or ""
            # For range errors ComfyUI's details are just the input's name again.
            suffix = f" - {details}" if details and details != input_name else ""
            parts.append(f"node {node_id} ({entry.get('class_type', '?')}) input {input_name}: "
                         f"{err.get('message', 'invalid')}{suffix}")
    if not parts:
        parts.append(exc.error.get("message") or "the prompt is invalid")
    return "ComfyUI rejected the workflow: " + "; ".join(parts)


def _state_from_history(entry: dict[str, Any]) -> tuple[str, str]:
    status = entry.get("status") or {}
    messages = status.get("messages") or []
    kinds = {m[0]: m[1] for m in messages if isinstance(m, list) and len(m) == 2}
    if "execution_interrupted" in kinds:
        return "cancelled", ""
    if status.get("status_str") == "success" or "execution_success" in kinds:
        return "succeeded", ""
    error = kinds.get("execution_error") or {}
    return "failed", _execution_error_text(error)


def _execution_error_text(data: dict[str, Any]) -> str:
    if not data:
        return "ComfyUI reported the run as failed without details"
    return (f"ComfyUI node {data.get('node_id', '?')} ({data.get('node_type', '?')}) failed: "
            f"{data.get('exception_type', 'error')}: {data.get('exception_message', '').strip()}")


def _find(api: ComfyUIClient, job, remote_id: str | None) -> RemoteRun | None:
    if remote_id:
        entry = api.history(remote_id)
        if entry is not None:
            state, error = _state_from_history(entry)
            return RemoteRun(remote_id, state, error)
        queue = api.queue()
        if remote_id in [item[1] for item in queue.get("queue_running", [])]:
            return RemoteRun(remote_id, "running")
        if remote_id in [item[1] for item in queue.get("queue_pending", [])]:
            return RemoteRun(remote_id, "pending")
        # It may have finished between the two reads.
        entry = api.history(remote_id)
        return RemoteRun(remote_id, *_state_from_history(entry)) if entry is not None else None
    tag = str(job.uuid)
    queue = api.queue()
    for state, key in (("running", "queue_running"), ("pending", "queue_pending")):
        for item in queue.get(key, []):
            if ((item[3] or {}).get("extra_pnginfo") or {}).get("lorasite_job") == tag:
                return RemoteRun(item[1], state)
    for prompt_id, entry in api.recent_history().items():
        prompt = entry.get("prompt") or []
        if len(prompt) > 3 and ((prompt[3] or {}).get("extra_pnginfo") or {}).get("lorasite_job") == tag:
            return RemoteRun(prompt_id, *_state_from_history(entry))
    return None


def _gone(remote_id: str, withdrawn: set[str]) -> Finished:
    if remote_id in withdrawn:
        return Finished("cancelled")
    return Finished("failed", "the ComfyUI server lost the run (restarted?)", retryable=True)


def _follow(api: ComfyUIClient, job, remote_id: str, client_id: str, notice_after: float,
            withdrawn: set[str], socket=None) -> Iterator:
    total = job.total_steps
    if socket is None:
        try:
            socket = api.open_socket(client_id)
        except ComfyUIError:
            socket = None
    try:
        # Connected first, then asked: a run that ended before we listened is seen in its history.
        found = _find(api, job, remote_id)
        if found is None:
            yield _gone(remote_id, withdrawn)
            return
        if found.state not in ("pending", "running"):
            yield Finished(found.state, found.error)
            return
        if socket is not None:
            checked = time.monotonic()
            # A re-attached run may be training already: its `executing` message went to the dead worker.
            training_since: float | None = time.monotonic() if found.state == "running" else None
            stepped = noticed = False
            while True:
                try:
                    message = read_message(socket, timeout=min(POLL_SECONDS, max(0.05, notice_after / 2)))
                except ComfyUIError:
                    yield LogLines(("the ComfyUI websocket closed; following the run by polling its history",))
                    break
                if message is None:
                    if time.monotonic() - checked > CHECK_SECONDS:
                        # A prompt deleted from the queue, or lost in a restart, sends nothing more.
                        checked = time.monotonic()
                        if _find(api, job, remote_id) is None:
                            yield _gone(remote_id, withdrawn)
                            return
                    if training_since and not stepped and not noticed and time.monotonic() - training_since > notice_after:
                        noticed = True
                        yield LogLines(("this ComfyUI server sends no per-step progress while it trains "
                                        "(before ComfyUI ~0.3.65); progress shows when the training node ends",))
                    yield Waiting()
                    continue
                data = message.get("data") or {}
                if data.get("prompt_id") not in (None, remote_id):
                    continue
                kind = message.get("type")
                if kind == "executing" and data.get("node") == workflow.TRAIN_NODE_ID:
                    training_since = time.monotonic()
                elif kind == "progress" and data.get("node") in (workflow.TRAIN_NODE_ID, None) and data.get("max"):
                    stepped = True
                    step = round(data["value"] / data["max"] * total) if total else int(data["value"])
                    yield Progress(step=max(0, min(step, total or step)), total_steps=total or int(data["max"]))
                elif kind == "execution_success":
                    yield Progress(step=total, total_steps=total)
                    yield Finished("succeeded")
                    return
                elif kind == "execution_error":
                    yield Finished("failed", _execution_error_text(data))
                    return
                elif kind == "execution_interrupted":
                    yield Finished("cancelled")
                    return
                yield Waiting()
        yield from _poll(api, job, remote_id, withdrawn)
    except ComfyUIError as exc:
        yield Finished("failed", _error_text(exc), retryable=exc.retryable)
    finally:
        if socket is not None:
            socket.close()


def _poll(api: ComfyUIClient, job, remote_id: str, withdrawn: set[str]) -> Iterator:
    failures = 0
    while True:
        try:
            found = _find(api, job, remote_id)
            failures = 0
        except ComfyUIError as exc:
            failures += 1
            if failures >= 30:
                yield Finished("failed", _error_text(exc), retryable=True)
                return
            found = RemoteRun(remote_id, "running")
        if found is None:
            yield _gone(remote_id, withdrawn)
            return
        if found.state not in ("pending", "running"):
            if found.state == "succeeded":
                yield Progress(step=job.total_steps, total_steps=job.total_steps)
            yield Finished(found.state, found.error)
            return
        for _ in range(int(POLL_SECONDS / 0.25)):
            time.sleep(0.25)
            yield Waiting()
