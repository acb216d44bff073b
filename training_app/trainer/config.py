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
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .field_spec import FieldSpec
from .networks import NETWORKS, TARGET_LAYERS, UNET_ATTENTION, network_problems

FAMILIES = ("sd15", "sdxl")
RANKS = (4, 8, 16, 32, 64, 128)
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy", "lion")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
MIXED_PRECISION = ("no", "fp16", "bf16")
PREDICTION_TYPES = ("epsilon", "v_prediction")
DEFAULT_TARGET_MODULES = UNET_ATTENTION
CLIP_SKIPS = (1, 2)
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MAX_SAMPLE_PROMPTS = 8
MAX_STEPS = 1_000_000


class TrainerConfigError(ValueError):
    """A training configuration value is invalid; the message is meant for people."""


def _key(default: Any, help: str, **rule: Any) -> Any:
    """A TrainConfig field; its FieldSpec (all but the name and type) rides in the field's metadata."""
    return field(default=default, metadata={"spec": {"help": help, **rule}})


def _steps_or_off(name: str) -> str:
    return f"{name} must be 0 (off) or a positive number of steps"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one LoRA training run (key names are the portal API).

    Each field carries its rule and help text; :data:`CONFIG_FIELDS` lists them as :class:`FieldSpec`.
    """

    network: str = _key("lora", "LoRA: the default. LoCon: LoRA plus the ResNet convolutions (styles). LoHa: "
                         "Hadamard product, more capacity per parameter. LoKr: Kronecker product, smallest files. "
                         "A1111/Forge and ComfyUI load all four; diffusers loads LoRA and LoCon.", choices=NETWORKS)
    dora: bool = _key(False, "DoRA (weight-decomposed LoRA/LoCon): learns each output channel's magnitude apart "
                      "from its direction; often better detail, about 30% slower.")
    target_layers: str = _key("attention", "Layers that get adapters: attention (kohya's minimum), + feed-forward, "
                              "all linear layers, or all linear + the ResNet convolutions (LoCon, LoHa, LoKr).",
                              choices=TARGET_LAYERS)
    rank: int = _key(16, "LoRA capacity. 8-16 for a character or object, 32-64 for a style; bigger files, slower.",
                     choices=RANKS)
    alpha: float | None = _key(None, "Scales the update by alpha/rank. Empty: equal to rank.", gt=0, le=1024,
                               message="alpha must be a positive number up to 1024 (or empty to use the rank)")
    conv_rank: int | None = _key(None, "Rank of the 3x3 convolutions (LoCon, or the convolution preset). Empty: "
                                 "the rank. kohya's conv_dim; 4-16 is usual.", choices=RANKS,
                                 message="conv_rank must be one of 4, 8, 16, 32, 64, 128 (or empty to use the rank)")
    conv_alpha: float | None = _key(None, "Alpha of the convolutions. Empty: equal to the convolution rank.", gt=0,
                                    le=1024, message="conv_alpha must be a positive number up to 1024 (or empty)")
    factor: int = _key(-1, "LoKr only: the Kronecker factor; -1 splits each layer as evenly as possible, 4-16 "
                       "gives bigger, more faithful files.", ge=-1, le=64,
                       message="factor must be -1 (as balanced as possible) or between 1 and 64")
    dropout: float = _key(0.0, "0 to 0.5; a little (0.05-0.1) can reduce overfitting.", ge=0, lt=1)
    learning_rate: float = _key(1e-4, "1e-4 is a safe start; 1e-3 with Prodigy set to 1.", gt=0, le=1,
                                hint="(typical: 1e-4)")
    text_encoder_lr: float | None = _key(None, "Empty: same as the learning rate. Usually half of it or less.",
                                         gt=0, le=1, hint="(typical: 1e-4)")
    optimizer: str = _key("adamw", "AdamW is the default; AdamW 8-bit saves memory on CUDA; Prodigy tunes the "
                          "rate itself; Lion is lean.", choices=OPTIMIZERS)
    lr_scheduler: str = _key("constant", "How the rate changes over the run.", choices=SCHEDULERS)
    lr_warmup_steps: int = _key(0, "Steps of linear ramp-up at the start.", ge=0, le=MAX_STEPS,
                                message=_steps_or_off("lr_warmup_steps"))
    batch_size: int = _key(1, "Images per step; raise it if memory allows.", ge=1, le=64)
    gradient_accumulation_steps: int = _key(
        1, "Steps whose gradients add up before one update: a bigger effective batch at the same memory.",
        ge=1, le=128)
    epochs: int = _key(10, "Passes over the dataset (with repeats).", ge=1, le=1000)
    max_steps: int | None = _key(None, "When set, wins over epochs.", ge=1, le=MAX_STEPS,
                                 message="max_steps must be between 1 and 1,000,000 (or empty to use epochs)")
    # 64 is the tiny demo model's size; real models train at 512-1024.
    resolution: int = _key(512, "Training size in pixels (512 for SD 1.5, 1024 for SDXL).", ge=64, le=2048,
                           multiple_of=8)
    bucketing: bool = _key(True, "Keep each image's shape instead of square crops.")
    repeats: int = _key(1, "Multiplies each image's own repeats (kohya folder numbers).", ge=1, le=100)
    # A comma would split the trigger into two tags when captions are shuffled.
    trigger_word: str = _key("", "The word that calls up your concept; defaults to the dataset's.",
                             max_length=100, forbidden=",",
                             message="trigger_word must be at most 100 characters and contain no comma")
    caption_dropout: float = _key(0.0, "Chance of training an image with an empty caption.", ge=0, lt=1)
    shuffle_tags: bool = _key(False, "Shuffle comma-separated tags each step.")
    keep_tokens: int = _key(0, "Tags at the start that never move (e.g. the trigger).", ge=0, le=32)
    noise_offset: float = _key(0.0, "0.05-0.1 lets the model learn very dark and bright images.", ge=0, le=1,
                               hint="(typical: 0.05-0.1)")
    min_snr_gamma: float | None = _key(None, "5 speeds up convergence; empty turns it off.", gt=0, le=100,
                                       hint="(typical: 5), or empty for off")
    mixed_precision: str = _key("no", "bf16 on Ampere or newer GPUs; fp16 on older ones; no on CPU.",
                                choices=MIXED_PRECISION)
    gradient_checkpointing: bool = _key(False, "Much less memory for about 30% more time (SDXL on 24 GB needs it).")
    train_text_encoder: bool = _key(False, "Helps new concepts bind to the trigger word; uses more memory.")
    clip_skip: int = _key(1, "2 uses the text encoder's second-to-last layer, as most anime models expect (A1111's "
                          "'Clip skip'); 1 for photographic models and SDXL.", choices=CLIP_SKIPS)
    seed: int = _key(42, "Same seed, same data, same device: the same LoRA.", ge=0, le=2**32 - 1)
    save_every_n_steps: int = _key(
        0, "Resumable checkpoints; a crashed or restarted worker resumes from the last one. 0: only at the end.",
        ge=0, le=MAX_STEPS, message=_steps_or_off("save_every_n_steps"))
    sample_every_n_steps: int = _key(0, "0: no samples during training.", ge=0, le=MAX_STEPS,
                                     message=_steps_or_off("sample_every_n_steps"))
    sample_prompts: tuple[str, ...] = _key((), f"One prompt per line (up to {MAX_SAMPLE_PROMPTS}).")
    log_every_n_steps: int = _key(50, "A kohya-style progress line in the job log every N steps (and at the end); "
                                  "0: none.", ge=0, le=MAX_STEPS, message=_steps_or_off("log_every_n_steps"))
    # Trainer-only keys (not exposed by the portal form).
    prediction_type: str | None = _key(None, "epsilon or v_prediction; empty: from the scheduler config.",
                                       choices=PREDICTION_TYPES, exposed=False,
                                       message="prediction_type must be epsilon, v_prediction or null")
    flip_aug: bool = _key(False, "Also train on horizontally mirrored images.", exposed=False)
    target_modules: tuple[str, ...] = _key(DEFAULT_TARGET_MODULES, "Explicit UNet module names that get adapters "
                                           "(instead of target_layers' linear preset).", exposed=False)
    sample_steps: int = _key(20, "Denoising steps per sample image.", ge=1, exposed=False)
    sample_guidance_scale: float = _key(7.0, "Classifier-free guidance scale of sample images.", exposed=False)
    cache_latents: bool = _key(True, "Encode each image with the VAE once, before training.", exposed=False)
    cache_to_disk: bool = _key(False, "Keep cached latents on disk instead of in memory.", exposed=False)
    max_grad_norm: float | None = _key(1.0, "Gradient clipping norm; empty: no clipping.", gt=0, exposed=False,
                                       message="max_grad_norm must be a positive number or null (no clipping)")

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def effective_alpha(self) -> float:
        """LoRA alpha actually used (``alpha`` or, when unset, ``rank``)."""
        return float(self.rank if self.alpha is None else self.alpha)

    @property
    def effective_conv_rank(self) -> int:
        return self.rank if self.conv_rank is None else self.conv_rank

    @property
    def effective_conv_alpha(self) -> float:
        return float(self.effective_conv_rank if self.conv_alpha is None else self.conv_alpha)

    @property
    def custom_target_modules(self) -> tuple[str, ...] | None:
        """The explicit UNet module list when it differs from the default, else None (the preset decides)."""
        return None if self.target_modules == DEFAULT_TARGET_MODULES else self.target_modules

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


def _validate(c: TrainConfig) -> None:
    """The table's rule for each key (the message names the key, the allowed values and the bad one)."""
    for spec in CONFIG_FIELDS:
        value = getattr(c, spec.name)
        problem = spec.problem(value)
        if problem:
            raise TrainerConfigError(f"{problem}, not {value!r}")
    _check(len(c.target_modules) > 0, "target_modules must name at least one module")
    for _, message in network_problems(dataclasses.asdict(c), DEFAULT_TARGET_MODULES):
        raise TrainerConfigError(message)


def _field_specs(cls: type) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        FieldSpec(name=f.name, type=hints[f.name], default=f.default, **f.metadata["spec"])
        for f in dataclasses.fields(cls)
    )


CONFIG_FIELDS: tuple[FieldSpec, ...] = _field_specs(TrainConfig)
"""Every :class:`TrainConfig` key with its rule and help text, in declaration order."""


@dataclass(frozen=True)
class ModelSpec:
    """The base model: a diffusers folder or a single ``.safetensors``/``.ckpt`` file."""

    path: Path
    family: str = "sd15"
    single_file: bool | None = None  # None: inferred from the path suffix
    config_dir: Path | None = None  # diffusers folder holding configs for single-file loads
    # The weights file's hashes for the LoRA header (model_hash.py); None: the trainer hashes the file itself.
    weights_sha256: str | None = None
    weights_short_hash: str | None = None

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
