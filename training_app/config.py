"""The training configuration the portal accepts: one pydantic schema, validated once at the edge.

Key names are a public contract (scripts send them); messages name the field and say what is allowed.
The trainer has its own frozen dataclass (`trainer.config.TrainConfig`) with the same keys; this
schema is the stricter, user-facing layer, and each backend checks what it supports on top.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RANKS = (4, 8, 16, 32, 64, 128)
OPTIMIZERS = ("adamw", "adamw8bit", "prodigy", "lion")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
PRECISIONS = ("no", "fp16", "bf16")
MAX_SAMPLE_PROMPTS = 8


def _one_of(values) -> str:
    return ", ".join(str(v) for v in values)


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = 16
    alpha: float | None = Field(default=None, description="LoRA alpha; empty means equal to rank (scale 1.0)")
    dropout: float = 0.0
    learning_rate: float = 1e-4
    text_encoder_lr: float | None = None
    optimizer: str = "adamw"
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    epochs: int = 10
    max_steps: int | None = Field(default=None, description="When set, wins over epochs")
    resolution: int = 512
    bucketing: bool = True
    repeats: int = 1
    trigger_word: str = ""
    caption_dropout: float = 0.0
    shuffle_tags: bool = False
    keep_tokens: int = 0
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    train_text_encoder: bool = False
    seed: int = 42
    save_every_n_steps: int = 0
    sample_every_n_steps: int = 0
    sample_prompts: list[str] = Field(default_factory=list)

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: int) -> int:
        if v not in RANKS:
            raise ValueError(f"rank must be one of {_one_of(RANKS)}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float | None) -> float | None:
        if v is not None and not (0 < v <= 1024 and math.isfinite(v)):
            raise ValueError("alpha must be a positive number up to 1024 (or empty to use the rank)")
        return v

    @field_validator("dropout", "caption_dropout")
    @classmethod
    def _probability(cls, v: float, info) -> float:
        if not 0 <= v < 1:
            raise ValueError(f"{info.field_name} must be at least 0 and below 1")
        return v

    @field_validator("learning_rate", "text_encoder_lr")
    @classmethod
    def _lr(cls, v: float | None, info) -> float | None:
        if v is not None and not (0 < v <= 1 and math.isfinite(v)):
            raise ValueError(f"{info.field_name} must be above 0 and at most 1 (typical: 1e-4)")
        return v

    @field_validator("optimizer")
    @classmethod
    def _optimizer(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_one_of(OPTIMIZERS)}")
        return v

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        if v not in SCHEDULERS:
            raise ValueError(f"lr_scheduler must be one of {_one_of(SCHEDULERS)}")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int) -> int:
        if not 1 <= v <= 64:
            raise ValueError("batch_size must be between 1 and 64")
        return v

    @field_validator("gradient_accumulation_steps")
    @classmethod
    def _accumulation(cls, v: int) -> int:
        if not 1 <= v <= 128:
            raise ValueError("gradient_accumulation_steps must be between 1 and 128")
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: int) -> int:
        if not 1 <= v <= 1000:
            raise ValueError("epochs must be between 1 and 1000")
        return v

    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 1_000_000:
            raise ValueError("max_steps must be between 1 and 1,000,000 (or empty to use epochs)")
        return v

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: int) -> int:
        # 64 is the tiny demo model's size; real models train at 512-1024.
        if not 64 <= v <= 2048 or v % 8:
            raise ValueError("resolution must be a multiple of 8 between 64 and 2048")
        return v

    @field_validator("repeats")
    @classmethod
    def _repeats(cls, v: int) -> int:
        if not 1 <= v <= 100:
            raise ValueError("repeats must be between 1 and 100")
        return v

    @field_validator("trigger_word")
    @classmethod
    def _trigger(cls, v: str) -> str:
        v = v.strip()
        if len(v) > 100 or "," in v:
            raise ValueError("trigger_word must be at most 100 characters and contain no comma")
        return v

    @field_validator("keep_tokens")
    @classmethod
    def _keep(cls, v: int) -> int:
        if not 0 <= v <= 32:
            raise ValueError("keep_tokens must be between 0 and 32")
        return v

    @field_validator("noise_offset")
    @classmethod
    def _noise_offset(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError("noise_offset must be between 0 and 1 (typical: 0.05-0.1)")
        return v

    @field_validator("min_snr_gamma")
    @classmethod
    def _snr(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 100:
            raise ValueError("min_snr_gamma must be above 0 and at most 100 (typical: 5), or empty for off")
        return v

    @field_validator("lr_warmup_steps", "save_every_n_steps", "sample_every_n_steps")
    @classmethod
    def _non_negative(cls, v: int, info) -> int:
        if not 0 <= v <= 1_000_000:
            raise ValueError(f"{info.field_name} must be 0 (off) or a positive number of steps")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if not 0 <= v < 2**32:
            raise ValueError("seed must be between 0 and 4294967295")
        return v

    @field_validator("sample_prompts")
    @classmethod
    def _prompts(cls, v: list[str]) -> list[str]:
        prompts = [p.strip() for p in v if p.strip()]
        if len(prompts) > MAX_SAMPLE_PROMPTS:
            raise ValueError(f"at most {MAX_SAMPLE_PROMPTS} sample_prompts")
        if any(len(p) > 1000 for p in prompts):
            raise ValueError("each sample prompt must be at most 1000 characters")
        return prompts

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.sample_every_n_steps and not self.sample_prompts:
            raise ValueError("sample_every_n_steps needs at least one sample prompt")
        return self

    def total_steps(self, image_count: int, repeats_total: int | None = None) -> int:
        """Optimizer steps: max_steps, or images × repeats × epochs ÷ (batch × accumulation), rounded up."""
        if self.max_steps:
            return self.max_steps
        samples = repeats_total if repeats_total is not None else image_count * self.repeats
        per_epoch = math.ceil(samples / self.batch_size)
        return max(1, math.ceil(per_epoch * self.epochs / self.gradient_accumulation_steps))

    def to_trainer_dict(self) -> dict[str, Any]:
        """The keys `trainer.config.TrainConfig.from_dict` takes (the same names)."""
        return self.model_dump()


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic errors as `[{"loc": [...], "msg": ...}]` with messages a person can act on."""
    errors = []
    for err in exc.errors():
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        loc = [str(part) for part in err["loc"]]
        if err["type"] == "extra_forbidden":
            msg = f"unknown setting {loc[-1]!r}"
        elif loc and not msg.startswith(loc[0]) and err["type"] not in {"value_error"}:
            msg = f"{loc[0]}: {msg}"
        errors.append({"loc": ["config", *loc], "msg": msg})
    return errors
