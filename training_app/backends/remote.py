"""The one driver every remote backend's `run` uses: attach or submit, follow, cancel, fetch, store.

A paid training is never started twice: the remote id is committed on the job as soon as it is
known (before the request where the client picks it), and a worker that picks the job up again
(reaper, a re-delivered message, a retry after a network error) finds the run by that id, or by
the job's uuid the run is tagged with, and follows it instead of submitting another.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from training_app import lifecycle
from training_app.artifacts import job_output_dir
from training_app.backends import weights
from training_app.backends.base import (
    BackendError,
    Finished,
    JobTakenOver,
    LogLines,
    Progress,
    RemoteBackend,
    RunOutcome,
    Waiting,
)
from training_app.models import ArtifactKind, TrainingJob

logger = logging.getLogger(__name__)

SD_FAMILIES = ("sd15", "sdxl")
# After asking the remote side to stop, how long to wait for it to say it has.
CANCEL_GRACE_SECONDS = 120


def run_remote(backend: RemoteBackend, job: TrainingJob, reporter: Any, overall_timeout: float | None = None) -> RunOutcome:
    remote_id = attach_or_submit(backend, job, reporter)
    final, cancelled = follow(backend, job, remote_id, reporter, overall_timeout)
    cost = backend.run_cost(final.metrics)
    metadata = {"remote_id": remote_id, "backend": backend.name, **final.metrics}
    if cost is not None:
        metadata["cost_usd"] = round(cost, 4)
        reporter.log(f"remote run cost ${cost:.4f}")
    if final.state == "succeeded":
        files = store_weights(backend, job, remote_id, reporter)
        return RunOutcome(stopped=False, lora_files=files, final_loss=job.loss,
                          steps_completed=job.total_steps or job.step, metadata=metadata)
    if final.state == "cancelled" or cancelled:
        return RunOutcome(stopped=True, steps_completed=job.step, metadata=metadata)
    raise BackendError(final.error or f"The {backend.label} run {remote_id} failed without saying why.",
                       retryable=final.retryable)


def attach_or_submit(backend: RemoteBackend, job: TrainingJob, reporter: Any) -> str:
    """The id of this job's remote run: the one already started (re-attached), else a new one."""
    stored = TrainingJob.objects.filter(pk=job.pk).values_list("remote_id", flat=True).first() or ""
    found = backend.find_run(job, stored or None)
    if found is not None:
        if found.remote_id != stored:
            _record(job, reporter, found.remote_id)
        reporter.log(f"re-attached to the {backend.kind} run {found.remote_id} ({found.state})")
        return found.remote_id
    if stored and backend.paid:
        # It may still be running and billing: starting another could pay twice.
        raise BackendError(f"The {backend.kind} run {stored} this job started can no longer be found on the "
                           "remote side; not starting a second paid run. Check the remote account, then retry the job.")
    if stored:
        reporter.log(f"the {backend.kind} server no longer knows run {stored} (restarted?); submitting it again")
    remote_id = backend.submit(job, reporter, lambda rid: _record(job, reporter, rid))
    reporter.log(f"submitted to {backend.name} as {remote_id}")
    return remote_id


def _record(job: TrainingJob, reporter: Any, remote_id: str) -> None:
    if not lifecycle.record_remote_id(job.pk, reporter.worker_id, remote_id):
        raise JobTakenOver(f"job {job.uuid} is no longer this worker's")
    job.remote_id = remote_id


def follow(backend: RemoteBackend, job: TrainingJob, remote_id: str, reporter: Any,
           overall_timeout: float | None) -> tuple[Finished, bool]:
    """Feed the reporter from the run's events until it ends; (the final event, whether we cancelled)."""
    started = time.monotonic()
    cancel_sent_at: float | None = None
    for event in backend.follow(job, remote_id, reporter):
        if isinstance(event, Progress):
            if event.loss is None:
                reporter.progress(event.step, event.total_steps)
            else:
                reporter.step(event.step, event.total_steps, event.loss, event.lr if event.lr is not None else 0.0)
        elif isinstance(event, LogLines):
            for line in event.lines:
                reporter.log(line)
        elif isinstance(event, Finished):
            return event, cancel_sent_at is not None
        elif isinstance(event, Waiting):
            reporter.tick()
        else:
            raise TypeError(f"unknown remote event {event!r}")
        now = time.monotonic()
        if cancel_sent_at is None and reporter.should_stop():
            if reporter.taken_over:
                # Another worker follows this run now; cancelling it would kill its work.
                raise JobTakenOver(f"job {job.uuid} is no longer this worker's")
            backend.cancel_run(job, remote_id)
            reporter.log(f"asked {backend.name} to stop run {remote_id}")
            cancel_sent_at = now
        elif cancel_sent_at is None and overall_timeout and now - started > overall_timeout:
            backend.cancel_run(job, remote_id)
            raise BackendError(f"The {backend.kind} run took longer than the backend's limit of "
                               f"{overall_timeout:.0f} s; it was cancelled.")
        elif cancel_sent_at is not None and now - cancel_sent_at > CANCEL_GRACE_SECONDS:
            reporter.log(f"{backend.name} did not confirm the stop within {CANCEL_GRACE_SECONDS} s")
            return Finished(state="cancelled"), True
    raise BackendError(f"The {backend.kind} run {remote_id} ended without a final status.", retryable=True)


def store_weights(backend: RemoteBackend, job: TrainingJob, remote_id: str, reporter: Any) -> dict[str, Path]:
    """Download, check and store the LoRA; for SD 1.5/SDXL both layouts (the other one converted)."""
    out = job_output_dir(job)
    out.mkdir(parents=True, exist_ok=True)
    downloaded = backend.fetch_weights(job, remote_id, out / "remote")
    header = weights.read_header(downloaded)
    layout = weights.detect_layout(header)
    family = job.base_model.family
    files = {ArtifactKind.LORA_REMOTE: downloaded}
    if layout == "kohya":
        files[ArtifactKind.LORA_KOHYA] = downloaded
    elif layout == "diffusers":
        files[ArtifactKind.LORA_DIFFUSERS] = downloaded
    if family in SD_FAMILIES and layout == "comfyui":
        files.update(_convert_comfyui(job, downloaded, out, reporter))
    elif family in SD_FAMILIES and layout != "comfyui":
        reporter.log(f"the remote LoRA is in the {layout} layout; stored as it came")
    return files


def _convert_comfyui(job: TrainingJob, source: Path, out: Path, reporter: Any) -> dict[str, Path]:
    try:
        # Imported here: a remote worker without the training stack still stores the file it got.
        from training_app.trainer.export import ExportError, save_layouts_from_comfyui
    except ImportError:
        reporter.log("this worker has no torch: only the LoRA as the server wrote it is stored")
        return {}
    metadata = {"lorasite_job_id": str(job.uuid), "lorasite_dataset_sha256": job.snapshot_sha256,
                "lorasite_trigger_word": job.config.get("trigger_word", ""),
                "ss_base_model_version": {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}[job.base_model.family],
                "ss_steps": str(job.total_steps), "ss_output_name": f"lora-{job.uuid.hex[:8]}"}
    try:
        kohya, diffusers, dropped = save_layouts_from_comfyui(
            source, job.base_model.family, out, f"lora-{job.uuid.hex[:8]}", unet_layers_per_block(job), metadata)
    except ExportError as exc:
        reporter.log(f"the LoRA could not be converted to the kohya/diffusers layouts ({exc}); "
                     "only the file as the server wrote it is stored")
        return {}
    if dropped:
        reporter.log(f"converted to kohya and diffusers layouts; {len(dropped)} tensors ComfyUI also trains "
                     "(bias/norm deltas, conv layers) have no place in those files and are only in the original")
    return {ArtifactKind.LORA_KOHYA: kohya, ArtifactKind.LORA_DIFFUSERS: diffusers}


def unet_layers_per_block(job: TrainingJob) -> int:
    """Read from the base model's diffusers folder when this node has it; SD 1.5 and SDXL use 2."""
    location = Path(job.base_model.location)
    if not location.is_absolute():
        location = Path(settings.LORASITE_MODELS_DIR) / location
    config = location / "unet" / "config.json"
    try:
        value = json.loads(config.read_text())["layers_per_block"]
        return int(value if isinstance(value, int) else value[0])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return 2
