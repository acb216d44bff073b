"""The training configuration the portal accepts: one pydantic schema, validated once at the edge.

The fields, defaults, ranges, messages and help text come from the trainer's table
(`trainer.config.CONFIG_FIELDS`), so the portal and the trainer cannot disagree; this module adds only the
portal's own rules (trimming, prompt limits, one cross-field check). Key names are a public contract
(scripts send them); each backend checks what it supports on top.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from training_app.trainer.config import (
    CONFIG_FIELDS,
    DEFAULT_TARGET_MODULES,
    MAX_SAMPLE_PROMPTS,
    MIXED_PRECISION,
    OPTIMIZERS,
    RANKS,
    SCHEDULERS,
    FieldSpec,
)
from training_app.trainer.networks import network_problems

__all__ = ["MAX_SAMPLE_PROMPTS", "OPTIMIZERS", "PRECISIONS", "RANKS", "SCHEDULERS", "TrainingConfig",
           "schema_from_table", "validation_errors"]

PRECISIONS = MIXED_PRECISION
MAX_PROMPT_CHARS = 1000


class TableSchema(BaseModel):
    """Base of every schema built from a table: frozen, and unknown keys are refused by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _portal_type(spec: FieldSpec) -> tuple[Any, Any]:
    """The pydantic annotation and default: JSON sends lists, so a tuple field becomes a list."""
    if typing.get_origin(spec.type) is tuple:
        (item, _) = typing.get_args(spec.type)
        return list[item], Field(default_factory=lambda: list(spec.default), description=spec.help)
    return spec.type, Field(default=spec.default, description=spec.help)


def schema_from_table(specs: Sequence[FieldSpec], name: str, base: type[BaseModel] = TableSchema) -> type[BaseModel]:
    """A pydantic model with one field per exposed spec and one validator that applies each spec's rule."""
    exposed = {spec.name: spec for spec in specs if spec.exposed}

    def check_table_rule(cls: type[BaseModel], value: Any, info: Any) -> Any:
        problem = exposed[info.field_name].problem(value)
        if problem:
            raise ValueError(problem)
        return value

    validators = {"check_table_rule": field_validator(*exposed)(check_table_rule)} if exposed else {}
    fields: dict[str, Any] = {field_name: _portal_type(spec) for field_name, spec in exposed.items()}
    return create_model(name, __base__=base, __validators__=validators, **fields)


class TrainingConfig(schema_from_table(CONFIG_FIELDS, "TrainingConfigFields")):
    """A job's hyper-parameters as the portal takes them (the trainer's exposed keys, same defaults)."""

    @field_validator("trigger_word", mode="before")
    @classmethod
    def _strip_trigger(cls, v: Any) -> Any:
        # Trimmed before the table's length and comma rule, so surrounding spaces never count.
        return v.strip() if isinstance(v, str) else v

    @field_validator("sample_prompts")
    @classmethod
    def _prompts(cls, v: list[str]) -> list[str]:
        prompts = [p.strip() for p in v if p.strip()]
        if len(prompts) > MAX_SAMPLE_PROMPTS:
            raise ValueError(f"at most {MAX_SAMPLE_PROMPTS} sample_prompts")
        if any(len(p) > MAX_PROMPT_CHARS for p in prompts):
            raise ValueError(f"each sample prompt must be at most {MAX_PROMPT_CHARS} characters")
        return prompts

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        if self.sample_every_n_steps and not self.sample_prompts:
            raise ValueError("sample_every_n_steps needs at least one sample prompt")
        for _, message in network_problems(self.model_dump(), DEFAULT_TARGET_MODULES):
            raise ValueError(message)
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
