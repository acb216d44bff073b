from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Schema
from pydantic import Field, create_model

from training_app.estimates import Estimate


class PresetOut(Schema):
    name: str
    description: str
    families: list[str]
    config: dict[str, Any]


class BaseModelOut(Schema):
    id: UUID
    name: str
    family: str
    description: str
    available: bool
    detail: str


class BackendOut(Schema):
    name: str
    label: str
    kind: str
    queue: str
    families: list[str]
    paid: bool
    available: bool
    detail: str
    facts: dict[str, Any] = Field(default_factory=dict, description="e.g. ComfyUI version and free VRAM")
    scope: str = Field(description="builtin, team or global")
    max_concurrent_jobs: int | None


class WebhookReceiptOut(Schema):
    result: str = Field(description="stored, duplicate or ignored")


class EstimateIn(Schema):
    config: dict[str, Any] = Field(default_factory=dict)
    preset: str | None = None
    dataset_id: UUID | None = None
    image_count: int | None = Field(default=None, ge=1, le=1_000_000)
    base_model: str | None = None
    family: str | None = None
    backend: str = "local"
    gpu: str = "h100"


def schema_from_dataclass(cls: type, name: str) -> type[Schema]:
    """An Out schema with exactly the dataclass's fields and types, all required, in the same order."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {f.name: (hints[f.name], ...) for f in dataclasses.fields(cls)}
    return create_model(name, __base__=Schema, __module__=__name__, **fields)


# The estimate's fields are declared once, on the domain dataclass; the API shows the same ones.
EstimateOut = schema_from_dataclass(Estimate, "EstimateOut")


class JobIn(Schema):
    dataset_id: UUID
    backend: str = "local"
    base_model: str
    preset: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, max_length=200)
    priority: int = Field(default=0, ge=-100, le=100)


class JobOut(Schema):
    id: UUID
    name: str
    team: str
    dataset_id: UUID | None
    base_model: str
    backend: str
    preset: str
    status: str
    step: int
    total_steps: int
    percent: float
    loss: float | None
    avg_loss: float | None
    lr: float | None
    eta_seconds: float | None
    error: str
    priority: int
    attempts: int
    image_count: int
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    config: dict[str, Any]
    remote_id: str
    cost_usd: float | None


class JobDetailOut(JobOut):
    snapshot_sha256: str
    snapshot: dict[str, Any]
    queue_position: int | None
    waiting_for: str | None = Field(default=None, description="What a queued job waits for, in words")


class LossPointOut(Schema):
    step: int
    loss: float
    lr: float | None
    at: datetime


class LogLineOut(Schema):
    line: str
    at: datetime


class EventsOut(Schema):
    loss_points: list[LossPointOut]
    logs: list[LogLineOut]


class ArtifactOut(Schema):
    id: UUID
    kind: str
    filename: str
    size_bytes: int
    sha256: str
    step: int | None
    prompt: str
    url: str
    created_at: datetime


class ActionIn(Schema):
    action: str = Field(description="'sample' or 'save': done at the job's next step")
