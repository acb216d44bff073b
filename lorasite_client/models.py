"""What the API returns, as frozen dataclasses: the fields a script uses, and `raw` with the whole answer
(so a field the server adds later is still there before this client names it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def from_api(cls: type[T], data: dict[str, Any]) -> T:
    """Build `cls` from an API answer: known fields by name, the whole answer kept as `raw`."""
    names = {f.name for f in dataclasses.fields(cls)} - {"raw"}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names}, raw=data)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Team:
    id: str
    slug: str
    name: str
    role: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Me:
    username: str
    email: str
    is_staff: bool
    teams: list[Team]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Dataset:
    id: str
    team: str
    name: str
    description: str
    trigger_word: str
    default_resolution: int
    image_count: int
    created_by: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Image:
    id: str
    dataset: str
    name: str
    sha256: str
    width: int
    height: int
    review_state: str
    caption: str
    repeats: int = 1
    caption_tokens: int = 0
    near_duplicate_of: str | None = None
    file_url: str = ""
    thumbnail_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class UploadReport:
    """What an upload did, summed over every request it took: `added`, `duplicates` and `rejected`
    as the server reported them (`rejected` items carry `name` and `reason`)."""

    added: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0

    def merged(self, answer: dict[str, Any]) -> UploadReport:
        return UploadReport(added=self.added + list(answer.get("added", [])),
                            duplicates=self.duplicates + list(answer.get("duplicates", [])),
                            rejected=self.rejected + list(answer.get("rejected", [])),
                            requests=self.requests + 1)


@dataclass(frozen=True)
class DatasetStats:
    total_images: int
    images_with_captions: int
    avg_caption_length: float
    review_states: dict[str, int]
    resolution: dict[str, Any]
    duplicate_groups: list[list[str]]
    top_tags: list[dict[str, Any]]
    top_words: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CaptionToolResult:
    batch: str | None
    changed: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CaptionRun:
    id: str
    dataset: str
    status: str
    provider: str
    total: int
    done: int
    failed: int
    percent: float
    error: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    families: list[str]
    config: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class BaseModel:
    id: str
    name: str
    family: str
    description: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Backend:
    name: str
    label: str
    kind: str
    families: list[str]
    paid: bool
    available: bool
    detail: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Estimate:
    """The server's estimate of a config: steps, time, peak VRAM, file size and cost (see docs/estimates.md)."""

    total_steps: int
    image_count: int
    samples_per_epoch: int
    family: str
    gpu: str
    seconds_per_step: float
    estimated_seconds: float
    backend_estimated_seconds: float
    peak_vram_gb: float
    network: str
    file_size_mb: float | None
    fits_on_gpu: bool
    estimated_cost_usd: float | None
    notes: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    team: str
    dataset_id: str | None
    base_model: str
    backend: str
    preset: str
    status: str
    step: int
    total_steps: int
    percent: float
    loss: float | None = None
    avg_loss: float | None = None
    lr: float | None = None
    eta_seconds: float | None = None
    error: str = ""
    attempts: int = 0
    image_count: int = 0
    created_at: str | None = None
    finished_at: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    cost_usd: float | None = None
    queue_position: int | None = None
    waiting_for: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class Artifact:
    id: str
    kind: str
    filename: str
    size_bytes: int
    sha256: str
    step: int | None
    url: str
    prompt: str = ""
    created_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class LibraryEntry:
    """A completed job and its LoRA files (kohya and diffusers layouts, or the remote trainer's file)."""

    job: Job
    loras: list[Artifact]


@dataclass(frozen=True)
class JobMessage:
    """One websocket message of a job: `type` is snapshot, phase, progress, status, log, sample or
    artifact; `data` the message as sent. `resumed` marks the snapshot that follows a reconnect."""

    type: str
    data: dict[str, Any]
    resumed: bool = False

    @property
    def step(self) -> int | None:
        return self.data.get("step")

    @property
    def status(self) -> str | None:
        return self.data.get("status")

    @property
    def finished(self) -> bool:
        return self.type in {"snapshot", "status"} and self.data.get("status") in TERMINAL_STATUSES
