"""Resumable training checkpoints, written so that a crash never breaks the latest one.

A checkpoint is a folder ``<output>/checkpoints/step-00000050/`` holding the
trainable LoRA tensors, optimizer, LR-scheduler (and fp16 grad-scaler) state,
every RNG state the run draws from, the data sampler's position and the step.
It is first written to a hidden ``.tmp-*`` sibling, each file fsync'ed, and
then renamed into place with ``os.replace``: a ``kill -9`` at any moment leaves
either the old set of complete checkpoints or the new one, never a half
written "latest". :func:`latest_checkpoint` only considers folders whose
``meta.json`` (written last) is present and parseable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from .config import CONFIG_FIELDS

CHECKPOINTS_DIR = "checkpoints"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d{8})$")


# Changing any of these between a checkpoint and a resume would silently train something else.
RESUME_MUST_MATCH = (
    "network",
    "dora",
    "target_layers",
    "conv_rank",
    "conv_alpha",
    "factor",
    "clip_skip",
    "rank",
    "alpha",
    "target_modules",
    "train_text_encoder",
    "batch_size",
    "gradient_accumulation_steps",
    "seed",
    "optimizer",
    "resolution",
    "bucketing",
    "flip_aug",
)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used to resume; the message says why."""


def check_resumable(meta: dict[str, Any], config: dict[str, Any], family: str) -> None:
    """Refuse to resume when the model family or a structural setting changed since the checkpoint."""
    if meta.get("family") != family:
        raise CheckpointError(f"checkpoint is for {meta.get('family')}, this job is {family}")
    saved = meta.get("config", {})
    # A checkpoint written before a key existed trained with that key's default.
    defaults = {spec.name: spec.default for spec in CONFIG_FIELDS}
    changed = [k for k in RESUME_MUST_MATCH if _plain(saved.get(k, defaults[k])) != _plain(config.get(k))]
    if changed:
        raise CheckpointError(
            f"cannot resume: these settings differ from the checkpoint: {', '.join(changed)}"
        )


def checkpoints_root(output_dir: Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename itself durable; not supported everywhere.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_complete(path: Path) -> bool:
    """True when ``path`` is a finished checkpoint folder (its meta file parses and names its step)."""
    try:
        meta = json.loads((Path(path) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("step"), int) and meta.get("complete") is True


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints under ``output_dir`` (or a ``checkpoints`` folder itself), oldest first."""
    root = Path(output_dir)
    if root.name != CHECKPOINTS_DIR:
        root = checkpoints_root(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if is_complete(p)]


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a run, or None. Interrupted writes are ignored."""
    ckpts = list_checkpoints(Path(output_dir))
    return ckpts[-1] if ckpts else None


def save_checkpoint(
    output_dir: Path,
    step: int,
    trainable: dict[str, Any],
    training_state: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Atomically write a checkpoint for ``step`` and return its folder.

    ``trainable`` are the LoRA tensors (safetensors), ``training_state`` is
    everything else torch-serialisable (optimizer, scheduler, RNG, sampler),
    ``meta`` is JSON (config, metrics) and is written last.
    """
    import torch
    from safetensors.torch import save_file

    root = checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed writer are garbage; only one trainer writes an output dir.
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(trainable, str(tmp / "lora_state.safetensors"))
        torch.save(training_state, tmp / "training_state.pt")
        meta = {**meta, "step": step, "format_version": FORMAT_VERSION, "complete": True}
        (tmp / META_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True, default=str), encoding="utf-8"
        )
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        if final.exists():
            # os.replace cannot overwrite a non-empty folder: move the old one aside first.
            old = root / f".tmp-old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint folder back: ``{"trainable", "training_state", "meta"}``."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not is_complete(path):
        raise CheckpointError(
            f"checkpoint {path} is incomplete (interrupted while saving?); use an earlier one"
        )
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format_version')}, expected {FORMAT_VERSION}"
        )
    try:
        trainable = load_file(str(path / "lora_state.safetensors"))
        state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is damaged: {exc}") from exc
    return {"trainable": trainable, "training_state": state, "meta": meta}


def capture_rng(data_rng: Any, torch_gen: Any) -> dict[str, Any]:
    """Every RNG state the run depends on (global python/torch/cuda plus the trainer's own)."""
    import random

    import torch

    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch_cpu": torch.get_rng_state(),
        "data_rng": data_rng.getstate(),
        "torch_gen": torch_gen.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], data_rng: Any, torch_gen: Any) -> None:
    """Inverse of :func:`capture_rng`."""
    import random

    import torch

    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch_cpu"])
    data_rng.setstate(_as_tuple(state["data_rng"]))
    torch_gen.set_state(state["torch_gen"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(obj: Any) -> Any:
    """``random.setstate`` wants tuples all the way down; serialisation may give lists."""
    if isinstance(obj, list | tuple):
        return tuple(_as_tuple(x) for x in obj)
    return obj
