"""API input and output shapes for datasets, images and captions."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from ninja import Schema
from pydantic import Field

from datasets_app.models import CaptionMode, CaptionSource, ProviderType, ReviewState, RunStatus


class DatasetIn(Schema):
    name: str = Field(min_length=1, max_length=120)
    team: str | None = Field(default=None, description="Team slug; optional when you belong to one team.")
    description: str = Field(default="", max_length=5000)
    trigger_word: str = Field(default="", max_length=100)
    default_resolution: int = Field(default=512, ge=64, le=4096)


class DatasetPatchIn(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=120)
    description: str | None = Field(default=None, max_length=5000)
    trigger_word: str | None = Field(default=None, max_length=100)
    default_resolution: int | None = Field(default=None, ge=64, le=4096)


class DatasetOut(Schema):
    id: UUID
    team: str
    name: str
    description: str
    trigger_word: str
    default_resolution: int
    image_count: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class RejectedOut(Schema):
    name: str
    reason: str


class AddedOut(Schema):
    id: UUID
    name: str
    sha256: str
    width: int
    height: int
    format: str
    caption: str
    near_duplicate_of: UUID | None


class DuplicateOut(Schema):
    name: str
    sha256: str
    existing_id: UUID


class IngestReportOut(Schema):
    added: list[AddedOut]
    duplicates: list[DuplicateOut]
    rejected: list[RejectedOut]


class ImportOut(Schema):
    dataset: DatasetOut
    report: IngestReportOut


class CropOut(Schema):
    target_width: int
    target_height: int
    # Fractions of the image's width and height, so a page can draw it over any thumbnail size.
    left: float
    top: float
    right: float
    bottom: float
    kept_fraction: float


class ImageOut(Schema):
    id: UUID
    dataset: UUID
    name: str
    sha256: str
    phash: str
    width: int
    height: int
    format: str
    size_bytes: int
    review_state: ReviewState
    reviewed_by: str | None
    reviewed_at: datetime | None
    repeats: int
    caption: str
    caption_tokens: int = Field(description="CLIP tokens in the caption (SD 1.5/SDXL read 75).")
    caption_tokens_exact: bool = Field(description="False: no CLIP tokenizer is configured, and the count is "
                                                   "a lower bound (CLIP's word pieces).")
    near_duplicate_of: UUID | None
    created_at: datetime
    thumbnail_url: str
    file_url: str
    crop: CropOut | None = None


class ImagePageOut(Schema):
    count: int
    page: int
    page_size: int
    pages: int
    results: list[ImageOut]


class ImagePatchIn(Schema):
    caption: str | None = Field(default=None, max_length=10_000)
    review_state: ReviewState | None = None
    repeats: int | None = Field(default=None, ge=1, le=1000)


class CaptionOut(Schema):
    version: int
    text: str
    source: CaptionSource
    provider_model: str
    created_by: str | None
    created_at: datetime
    is_current: bool


class RestoreIn(Schema):
    version: int = Field(ge=1)


ToolName = Literal["add_trigger", "replace", "clean_whitespace", "truncate", "append_tags", "strip_boilerplate",
                   "dedupe_tags", "underscores", "prefix", "suffix", "truncate_words", "truncate_tokens"]


class CaptionToolIn(Schema):
    tool: ToolName
    find: str = Field(default="", max_length=500)
    replace: str = Field(default="", max_length=1000)
    regex: bool = Field(default=False, description="`find` is a Python regular expression.")
    text: str = Field(default="", max_length=1000, description="The prefix or suffix.")
    max_length: int = Field(default=0, ge=0, le=10_000)
    max_words: int = Field(default=0, ge=0, le=1000)
    max_tokens: int = Field(default=0, ge=0, le=1000)
    tags: str = Field(default="", max_length=2000)
    review_state: ReviewState | None = Field(default=None, description="Only images in this review state.")


class CaptionToolOut(Schema):
    batch: UUID | None = Field(description="Pass to /captions/undo to revert this run; null when nothing changed.")
    changed: int


class UndoIn(Schema):
    batch: UUID


class UndoOut(Schema):
    restored: int
    skipped_edited_since: int


class BulkReviewIn(Schema):
    review_state: ReviewState
    images: list[UUID] = Field(max_length=5000)


class BulkReviewOut(Schema):
    changed: int


class TagCount(Schema):
    tag: str
    count: int


class WordCount(Schema):
    word: str
    count: int


class ResolutionCount(Schema):
    width: int
    height: int
    count: int


class ResolutionSummary(Schema):
    min_width: int | None
    max_width: int | None
    min_height: int | None
    max_height: int | None
    common: list[ResolutionCount]


class StatsOut(Schema):
    total_images: int
    images_with_captions: int
    avg_caption_length: float
    review_states: dict[str, int]
    resolution: ResolutionSummary
    duplicate_groups: list[list[UUID]]
    top_tags: list[TagCount]
    top_words: list[WordCount]


StepOp = Literal["clean", "strip_boilerplate", "trigger", "prefix", "suffix", "replace", "dedupe_tags", "underscores",
                 "truncate_words", "truncate_tokens", "truncate_chars", "append_tags"]


class PostprocessStepIn(Schema):
    op: StepOp
    find: str = Field(default="", max_length=500)
    replace: str = Field(default="", max_length=1000)
    regex: bool = False
    text: str = Field(default="", max_length=1000)
    tags: str = Field(default="", max_length=2000)
    max_words: int = Field(default=0, ge=0, le=1000)
    max_tokens: int = Field(default=0, ge=0, le=1000)
    max_length: int = Field(default=0, ge=0, le=10_000)


class CaptionRunIn(Schema):
    provider: str = Field(min_length=1, max_length=80, description="Provider name or id.")
    prompt: str | None = Field(default=None, max_length=4000, description="Default: the provider's prompt.")
    mode: CaptionMode = CaptionMode.UNCAPTIONED
    postprocess: list[PostprocessStepIn] | None = Field(
        default=None, max_length=20,
        description="Steps applied in order to each answer; default: strip_boilerplate, clean, trigger "
                    "(trigger only when the dataset has a trigger word). [] keeps the raw answer.")


class RunErrorOut(Schema):
    image: UUID
    name: str
    error: str


class CaptionRunOut(Schema):
    id: UUID
    dataset: UUID
    status: RunStatus
    provider: str
    provider_type: str
    model: str
    prompt: str
    mode: CaptionMode
    postprocess: list[dict]
    total: int
    done: int
    failed: int
    percent: float
    error: str | None
    errors: list[RunErrorOut]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    undone_at: datetime | None


class CaptionProviderIn(Schema):
    team: str | None = Field(default=None, description="Team slug; optional when you belong to one team.")
    name: str = Field(min_length=1, max_length=80)
    type: ProviderType
    base_url: str = Field(default="", max_length=500)
    model: str = Field(default="", max_length=200)
    prompt: str = Field(default="", max_length=4000)
    api_key_env: str = Field(default="", max_length=100,
                             description="NAME of the environment variable holding the key on the workers.")
    concurrency: int = Field(default=4, ge=1, le=64)
    timeout_seconds: int = Field(default=60, ge=1, le=600)
    max_image_side: int = Field(default=768, ge=64, le=4096)


class CaptionProviderOut(Schema):
    id: UUID
    team: str | None
    name: str
    type: ProviderType
    base_url: str
    model: str
    prompt: str
    api_key_env: str = Field(description="The variable's name; the key itself is never stored or shown.")
    concurrency: int
    timeout_seconds: int
    max_image_side: int
    enabled: bool
    available: bool | None
    availability: str
