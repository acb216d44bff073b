"""The local backend: runs the trainer library on this worker's GPU (or CPU) inside the `gpu` queue."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings

from lorasite.broker import broker_kind
from lorasite.core.workers import live_workers, worker_thread_count
from training_app.artifacts import job_file_stem, job_output_dir
from training_app.backends.base import Availability, BackendError, RunOutcome
from training_app.config import TrainingConfig
from training_app.estimates import effective_repeats
from training_app.models import ArtifactKind, JobLog


def models_dir() -> Path:
    return Path(settings.LORASITE_MODELS_DIR)


def resolve_model_location(location: str) -> Path:
    path = Path(location)
    return path if path.is_absolute() else models_dir() / path


def single_file_config_dir(family: str) -> Path:
    """Where a single-file checkpoint's configs and tokenizers come from (loading stays offline): any
    diffusers folder of the same family, kept as LORASITE_MODELS_DIR/configs/<family>."""
    return models_dir() / "configs" / family


def weights_hashes(base, location: Path, reporter) -> dict[str, str]:
    """The base model's sha256 (hashed and stored the first time a job trains on it: models registered
    before hashes were) and A1111's short hash (a 64 KiB read), as ModelSpec fields for the LoRA header."""
    from training_app.trainer.model_hash import ModelHashError, base_model_short_hash

    try:
        if not base.weights_sha256:
            reporter.log(f"hashing base model {base.name} (once)")
            base.store_weights_sha256(location)
        return {"weights_sha256": base.weights_sha256, "weights_short_hash": base_model_short_hash(location)}
    except ModelHashError:
        return {}  # the trainer reports what it cannot hash or load


def describe_workers(workers: list) -> str:
    """"1 GPU worker online", "1 CPU worker online (no GPU: slow)", "3 workers online (2 GPU, 1 CPU)"."""
    gpus = sum(1 for w in workers if (w.device or "cpu") != "cpu")
    cpus = len(workers) - gpus
    plural = "s" if len(workers) != 1 else ""
    if not cpus:
        return f"{gpus} GPU worker{plural} online"
    if not gpus:
        return f"{cpus} CPU worker{plural} online (no GPU: training is slow)"
    return f"{len(workers)} workers online ({gpus} GPU, {cpus} CPU)"


def torch_threads() -> int:
    """torch's intra-op threads for one training: LORASITE_TORCH_THREADS, else OMP_NUM_THREADS (an
    operator's or a test's explicit choice), else the CPUs this process may use shared by the worker
    threads that may train at once (two trainings each using every core oversubscribe the CPU and
    run several times slower)."""
    for name in ("LORASITE_TORCH_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise BackendError(f"{name} must be a whole number, got {raw!r}") from None
        if value < 1:
            raise BackendError(f"{name} must be at least 1")
        return value
    return max(1, len(os.sched_getaffinity(0)) // worker_thread_count())


class LocalBackend:
    name = "local"
    kind = "local"
    label = "This installation's training workers"
    queue = "gpu"
    actor_name = "run_local_job"
    families = ("sd15", "sdxl")
    paid = False

    def availability(self) -> Availability:
        workers = live_workers("gpu")
        if workers:
            return Availability(True, describe_workers(workers), {"workers": len(workers)})
        if broker_kind() == "stub":
            return Availability(True, "embedded worker (runs inside the web process)")
        return Availability(False, "no training worker has checked in recently; jobs will wait in the queue")

    def estimate_cost(self, config, total_steps, base_model) -> float | None:
        return None  # this installation's own hardware

    def logs(self, job) -> list[str]:
        # The trainer writes its lines through the reporter: the job's own log is the whole story.
        return list(JobLog.objects.filter(job=job).order_by("id").values_list("line", flat=True))

    def validate(self, config, base_model, total_steps=None) -> list[dict[str, Any]]:
        errors = []
        if base_model.family not in self.families:
            errors.append({"loc": ["base_model"],
                           "msg": f"the local backend trains {', '.join(self.families)} models, not {base_model.family}"})
        return errors

    def run(self, job, reporter) -> RunOutcome:
        # Imported here: web processes never load torch.
        import torch

        from training_app import trainer
        from training_app.trainer.models import ModelLoadError

        threads = torch_threads()
        torch.set_num_threads(threads)
        reporter.log(f"torch threads: {threads} ({worker_thread_count()} worker thread(s) in this process; "
                     f"OpenMP wait policy {os.environ.get('OMP_WAIT_POLICY', 'default')})")
        config = TrainingConfig(**job.config)
        output_dir = job_output_dir(job)
        output_dir.mkdir(parents=True, exist_ok=True)
        items = []
        for image in job.snapshot["images"]:
            path = Path(settings.MEDIA_ROOT) / image["storage_name"]
            if not path.is_file():
                raise BackendError(f"An image of the dataset snapshot is missing from storage ({image['id']}); "
                                   "was the dataset deleted? Retry after restoring it, or train a new job.")
            items.append(trainer.DatasetItem(path=path, caption=image["caption"],
                                             repeats=effective_repeats(image, config)))
        resume_from = trainer.latest_checkpoint(output_dir)
        if resume_from is not None:
            reporter.log(f"resuming from checkpoint {resume_from.name}")
        base = job.base_model
        location = resolve_model_location(base.location)
        try:
            spec = trainer.TrainSpec(
                model=trainer.ModelSpec(path=location, family=base.family,
                                        config_dir=single_file_config_dir(base.family) if location.is_file() else None,
                                        **weights_hashes(base, location, reporter)),
                items=tuple(items),
                config=trainer.TrainConfig.from_dict(job.config),
                output_dir=output_dir,
                device=os.environ.get("LORASITE_DEVICE") or None,
                resume_from=resume_from,
                checkpoint_every_seconds=settings.JOB_CHECKPOINT_SECONDS,
                metadata={"job_id": str(job.uuid), "dataset_sha256": job.snapshot_sha256,
                          "output_name": job_file_stem(job), "trigger_word": job.config.get("trigger_word", ""),
                          "author": job.team.name, "description": job.name},
            )
            result = trainer.train(spec, reporter)
        except trainer.TrainerConfigError as exc:
            raise BackendError(f"The training settings do not work for this run: {exc}") from exc
        except trainer.CheckpointError as exc:
            raise BackendError(f"The job's checkpoint cannot be resumed: {exc}") from exc
        except ModelLoadError as exc:
            raise BackendError(f"The base model {base.name!r} could not be loaded: {exc}") from exc
        files = {}
        if result.lora_kohya_path:
            files[ArtifactKind.LORA_KOHYA] = Path(result.lora_kohya_path)
        if result.lora_diffusers_path:
            files[ArtifactKind.LORA_DIFFUSERS] = Path(result.lora_diffusers_path)
        return RunOutcome(stopped=result.stopped, lora_files=files, final_loss=result.final_loss,
                          steps_completed=result.steps_completed, metadata=dict(result.metadata))

    def cancel(self, job) -> None:
        # Cooperative: the worker's reporter sees `cancelling` at the next step and the trainer saves.
        return None

