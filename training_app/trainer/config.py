"""Configuration objects for the LoRA trainer.

Everything a training run needs is described by frozen dataclasses so that a
run is a pure function of its :class:`TrainSpec`. The key names of
:class:`TrainConfig` are part of the portal's API; :meth:`TrainConfig.from_dict`
refuses unknown keys instead of silently ignoring a typo like ``learning_rte``.

This module is imported by web processes, so it must not import torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("sd15", "sdxl")
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy", "lion")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
MIXED_PRECISION = ("no", "fp16", "bf16")
PREDICTION_TYPES = ("epsilon", "v_prediction")
DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class TrainerConfigError(ValueError):
    """A training configuration value is invalid; the message is meant for people."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one LoRA training run (key names are the portal API)."""

    rank: int = 16
    alpha: float | None = None  # None: same as rank (scale 1.0)
    dropout: float = 0.0
    learning_rate: float = 1e-4
    text_encoder_lr: float | None = None  # None: same as learning_rate
    optimizer: str = "adamw"
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    epochs: int = 10
    max_steps: int | None = None  # wins over epochs when set
    resolution: int = 512
    bucketing: bool = True
    repeats: int = 1
    trigger_word: str = ""
    caption_dropout: float = 0.0
    shuffle_tags: bool = False
    keep_tokens: int = 0
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    train_text_encoder: bool = False
    seed: int = 42
    save_every_n_steps: int = 0  # 0: only the final save
    sample_every_n_steps: int = 0  # 0: no periodic samples
    sample_prompts: tuple[str, ...] = ()
    # Trainer-only keys (not exposed by the portal form).
    prediction_type: str | None = None  # None: from the scheduler config
    flip_aug: bool = False
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    sample_steps: int = 20
    sample_guidance_scale: float = 7.0
    cache_latents: bool = True
    cache_to_disk: bool = False
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def effective_alpha(self) -> float:
        """LoRA alpha actually used (``alpha`` or, when unset, ``rank``)."""
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def effective_text_encoder_lr(self) -> float:
        """Learning rate of the text-encoder LoRA parameters."""
        return self.learning_rate if self.text_encoder_lr is None else self.text_encoder_lr

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a JSON-like mapping, coercing types and rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise TrainerConfigError("training config must be a JSON object")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise TrainerConfigError(
                f"unknown training config key(s): {', '.join(unknown)} (known keys: {', '.join(sorted(known))})"
            )
        kwargs = {name: _coerce(name, known[name].type, value) for name, value in data.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict that :meth:`from_dict` accepts back."""
        out = dataclasses.asdict(self)
        out["sample_prompts"] = list(self.sample_prompts)
        out["target_modules"] = list(self.target_modules)
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """Copy with some values changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _coerce(name: str, type_name: Any, value: Any) -> Any:
    """Convert JSON values into the declared field type, with people-readable errors."""
    t = str(type_name)
    optional = "None" in t
    if value is None:
        if optional:
            return None
        raise TrainerConfigError(f"{name} must not be null")
    try:
        if t.startswith("tuple"):
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise TrainerConfigError(f"{name} must be a list of strings")
            if not all(isinstance(v, str) for v in value):
                raise TrainerConfigError(f"{name} must be a list of strings")
            return tuple(value)
        if t.startswith("bool"):
            if not isinstance(value, bool):
                raise TrainerConfigError(f"{name} must be true or false, not {value!r}")
            return value
        if t.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
                raise TrainerConfigError(f"{name} must be a whole number, not {value!r}")
            return int(value)
        if t.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise TrainerConfigError(f"{name} must be a number, not {value!r}")
            return float(value)
        if t.startswith("str"):
            if not isinstance(value, str):
                raise TrainerConfigError(f"{name} must be a string, not {value!r}")
            return value
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TrainerConfigError):
            raise
        raise TrainerConfigError(f"{name}: cannot use {value!r} ({exc})") from exc
    return value  # pragma: no cover - every declared type is handled above


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise TrainerConfigError(message)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _validate(c: TrainConfig) -> None:
    """Range checks; each message names the key and the allowed values."""
    _check(isinstance(c.rank, int) and c.rank > 0, f"rank must be a positive whole number, not {c.rank!r}")
    _check(
        c.alpha is None or (_finite(c.alpha) and c.alpha > 0),
        f"alpha must be a positive number, not {c.alpha!r}",
    )
    _check(
        _finite(c.dropout) and 0.0 <= c.dropout < 1.0, f"dropout must be between 0 and 1, not {c.dropout!r}"
    )
    _check(
        _finite(c.learning_rate) and 0 < c.learning_rate <= 1.0,
        f"learning_rate must be a number in (0, 1], not {c.learning_rate!r}",
    )
    _check(
        c.text_encoder_lr is None or (_finite(c.text_encoder_lr) and 0 < c.text_encoder_lr <= 1.0),
        f"text_encoder_lr must be a number in (0, 1], not {c.text_encoder_lr!r}",
    )
    _check(
        c.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {c.optimizer!r}"
    )
    _check(
        c.lr_scheduler in SCHEDULERS,
        f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, not {c.lr_scheduler!r}",
    )
    _check(c.lr_warmup_steps >= 0, f"lr_warmup_steps must be 0 or more, not {c.lr_warmup_steps!r}")
    _check(c.batch_size >= 1, f"batch_size must be at least 1, not {c.batch_size!r}")
    _check(
        c.gradient_accumulation_steps >= 1,
        f"gradient_accumulation_steps must be at least 1, not {c.gradient_accumulation_steps!r}",
    )
    _check(c.epochs >= 1, f"epochs must be at least 1, not {c.epochs!r}")
    _check(
        c.max_steps is None or c.max_steps >= 1, f"max_steps must be at least 1 when set, not {c.max_steps!r}"
    )
    _check(
        c.resolution >= 16 and c.resolution % 8 == 0,
        f"resolution must be a multiple of 8 and at least 16, not {c.resolution!r}",
    )
    _check(c.repeats >= 1, f"repeats must be at least 1, not {c.repeats!r}")
    _check(
        _finite(c.caption_dropout) and 0.0 <= c.caption_dropout <= 1.0,
        f"caption_dropout must be a probability between 0 and 1, not {c.caption_dropout!r}",
    )
    _check(c.keep_tokens >= 0, f"keep_tokens must be 0 or more, not {c.keep_tokens!r}")
    _check(
        _finite(c.noise_offset) and 0.0 <= c.noise_offset <= 1.0,
        f"noise_offset must be between 0 and 1, not {c.noise_offset!r}",
    )
    _check(
        c.min_snr_gamma is None or (_finite(c.min_snr_gamma) and c.min_snr_gamma > 0),
        f"min_snr_gamma must be a positive number or null (off), not {c.min_snr_gamma!r}",
    )
    _check(
        c.mixed_precision in MIXED_PRECISION,
        f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, not {c.mixed_precision!r}",
    )
    _check(
        c.save_every_n_steps >= 0, f"save_every_n_steps must be 0 (off) or more, not {c.save_every_n_steps!r}"
    )
    _check(
        c.sample_every_n_steps >= 0,
        f"sample_every_n_steps must be 0 (off) or more, not {c.sample_every_n_steps!r}",
    )
    _check(
        c.prediction_type is None or c.prediction_type in PREDICTION_TYPES,
        f"prediction_type must be epsilon, v_prediction or null, not {c.prediction_type!r}",
    )
    _check(len(c.target_modules) > 0, "target_modules must name at least one module")
    _check(c.sample_steps >= 1, f"sample_steps must be at least 1, not {c.sample_steps!r}")
    _check(_finite(c.sample_guidance_scale), "sample_guidance_scale must be a number")
    _check(
        c.max_grad_norm is None or (_finite(c.max_grad_norm) and c.max_grad_norm > 0),
        f"max_grad_norm must be a positive number or null (no clipping), not {c.max_grad_norm!r}",
    )
    _check(c.seed >= 0, f"seed must be 0 or more, not {c.seed!r}")


@dataclass(frozen=True)
class ModelSpec:
    """The base model: a diffusers folder or a single ``.safetensors``/``.ckpt`` file."""

    path: Path
    family: str = "sd15"
    single_file: bool | None = None  # None: inferred from the path suffix
    config_dir: Path | None = None  # diffusers folder holding configs for single-file loads

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.config_dir is not None:
            object.__setattr__(self, "config_dir", Path(self.config_dir))
        if self.single_file is None:
            object.__setattr__(self, "single_file", self.path.suffix.lower() in SINGLE_FILE_SUFFIXES)

    @property
    def base_model_version(self) -> str:
        """kohya's ``ss_base_model_version`` string for this family."""
        return {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}.get(self.family, self.family)


@dataclass(frozen=True)
class DatasetItem:
    """One training image with its caption and per-image repeat count (None: config default)."""

    path: Path
    caption: str = ""
    repeats: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.repeats is not None and self.repeats < 1:
            raise TrainerConfigError(f"repeats for {self.path.name} must be at least 1, not {self.repeats!r}")


@dataclass(frozen=True)
class TrainSpec:
    """Everything :func:`training_app.trainer.train` needs for one run."""

    model: ModelSpec
    items: tuple[DatasetItem, ...]
    config: TrainConfig
    output_dir: Path
    device: str | None = None  # None: cuda when available, else cpu
    resume_from: Path | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Also checkpoint whenever this much wall time has passed since the last one (None: by steps
    # only), so a killed job loses minutes at most whatever save_every_n_steps says.
    checkpoint_every_seconds: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "items", tuple(self.items))
        if self.resume_from is not None:
            object.__setattr__(self, "resume_from", Path(self.resume_from))
        if not self.items:
            raise TrainerConfigError("the dataset has no images")
        seconds = self.checkpoint_every_seconds
        if seconds is not None and not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
            raise TrainerConfigError(f"checkpoint_every_seconds must be a positive number of seconds, not {seconds!r}")
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise TrainerConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {self.device!r}")


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) run produced."""

    steps_completed: int
    total_steps: int
    final_loss: float | None
    avg_loss: float | None
    stopped: bool
    lora_kohya_path: Path | None
    lora_diffusers_path: Path | None
    checkpoint_path: Path | None
    sample_paths: tuple[Path, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    losses: tuple[float, ...] = ()  # per optimizer step of this process (resumed runs: after the resume)
