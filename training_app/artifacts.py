"""The job artifact store: files a job produced under MEDIA_ROOT, registered with their size and sha256.

Backends write into `job_output_dir(job)`; the reporter and the runner register what was written here,
so the portal never guesses file layouts.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from django.conf import settings

from training_app.models import Artifact, ArtifactKind, TrainingJob
from training_app.trainer.model_hash import sha256_file

# The trainer's names for the layouts it writes (it imports no Django) -> the portal's artifact kinds.
LORA_ARTIFACT_KINDS = {"kohya": ArtifactKind.LORA_KOHYA, "diffusers": ArtifactKind.LORA_DIFFUSERS}


def job_output_dir(job: TrainingJob) -> Path:
    return Path(settings.MEDIA_ROOT) / job.output_dir_name()


def job_file_stem(job: TrainingJob) -> str:
    """Readable and unique: the job's name as a slug plus its short id, e.g. `demo-shapes-fast-1a2b3c4d`
    (A1111 and ComfyUI list a LoRA by its file name)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", job.name).strip("-")[:60].strip("-")
    return f"{slug or 'lora'}-{job.uuid.hex[:8]}"


def download_filename(artifact: Artifact) -> str:
    """The name a download is saved under: LoRA files after their job, whatever their name on disk
    (diffusers' loader wants `pytorch_lora_weights.safetensors` inside its folder)."""
    if artifact.kind == ArtifactKind.LORA_KOHYA:
        return f"{job_file_stem(artifact.job)}.safetensors"
    if artifact.kind == ArtifactKind.LORA_DIFFUSERS:
        return f"{job_file_stem(artifact.job)}-diffusers.safetensors"
    if artifact.kind == ArtifactKind.LORA_REMOTE:
        return f"{job_file_stem(artifact.job)}-as-trained.safetensors"
    return Path(artifact.path).name


def artifact_url(artifact: Artifact) -> str:
    return f"/api/jobs/{artifact.job.uuid}/artifacts/{artifact.uuid}/download"


def media_relative(path: Path) -> str:
    return str(Path(path).resolve().relative_to(Path(settings.MEDIA_ROOT).resolve()))


def record_artifact(job: TrainingJob, kind: str, path: Path, step: int | None = None, prompt: str = "",
                    replace: bool = False) -> Artifact:
    """Register a file under MEDIA_ROOT as a job artifact (size + sha256); `replace` keeps one of the kind."""
    path = Path(path)
    fields = {"path": media_relative(path), "size_bytes": path.stat().st_size, "step": step, "prompt": prompt,
              "sha256": sha256_file(path) if path.is_file() else ""}
    if replace:
        artifact, _ = Artifact.objects.update_or_create(job=job, kind=kind, defaults=fields)
    else:
        artifact = Artifact.objects.create(job=job, kind=kind, **fields)
    return artifact


def store_sample(job: TrainingJob, step: int, prompt: str, path: Path) -> Artifact:
    """Keep a sample image in the job's `samples/` folder (copied there if written elsewhere)."""
    target_dir = job_output_dir(job) / "samples"
    path = Path(path)
    if target_dir.resolve() not in path.resolve().parents:
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / path.name
        shutil.copyfile(path, target)
        path = target
    return record_artifact(job, ArtifactKind.SAMPLE, path, step=step, prompt=prompt)
