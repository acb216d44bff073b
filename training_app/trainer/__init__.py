"""LoRA trainer for SD 1.5 / SDXL diffusion models (library side of lorasite).

Public API::

    from training_app.trainer import train, TrainSpec, TrainConfig, ModelSpec, DatasetItem
    result = train(spec, reporter)

Importing this package is cheap and does not import torch; heavy modules are
loaded when ``train`` (or another heavy function) is first used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .checkpoint import CheckpointError, latest_checkpoint
from .config import DatasetItem, ModelSpec, TrainConfig, TrainerConfigError, TrainResult, TrainSpec
from .reporter import BaseReporter, NullReporter, PrintReporter, RecordingReporter, Reporter

# Sleeping, not spinning, OpenMP waiters: spinning ones collapse (30-40x slower) when anything else
# wants the same cores. Set before torch loads its OpenMP runtime; an operator's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "BaseReporter",
    "CheckpointError",
    "DatasetItem",
    "ModelLoadError",
    "ModelSpec",
    "NullReporter",
    "PrintReporter",
    "RecordingReporter",
    "Reporter",
    "TrainConfig",
    "TrainResult",
    "TrainSpec",
    "TrainerConfigError",
    "build_tiny_model",
    "latest_checkpoint",
    "train",
]


def train(spec: TrainSpec, reporter: Reporter | None = None) -> TrainResult:
    """Run a LoRA training job; see :func:`training_app.trainer.loop.train`."""
    from .loop import train as _train

    return _train(spec, reporter)


def build_tiny_model(out_dir: Any, family: str = "sd15", seed: int = 0) -> Path:
    """Build a tiny random-weight model folder; see :func:`training_app.trainer.tiny.build_tiny_model`."""
    from .tiny import build_tiny_model as _build

    return _build(out_dir, family=family, seed=seed)


def __getattr__(name: str) -> Any:
    # ModelLoadError lives in models.py, which is light but keep the lazy pattern uniform.
    if name == "ModelLoadError":
        from .models import ModelLoadError

        return ModelLoadError
    raise AttributeError(name)
