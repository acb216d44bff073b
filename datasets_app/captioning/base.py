"""The provider protocol, its inputs and outputs, and the typed errors every provider raises.

Three kinds of failure, because the runner treats them differently:
- `RetryableError`: try this image again later (429, 5xx, timeouts, a model still loading);
- `ImageError`: this image failed (an empty or unreadable answer); record it, go on;
- `FatalError`: nothing will work until a person fixes something (a bad key, no credits, a
  wrong URL or model); the whole run fails at once with the message saying what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Caption:
    text: str
    confidence: float | None
    model: str


@dataclass(frozen=True)
class CaptionInput:
    """One image to caption: the prepared (downscaled JPEG) bytes and what templates may name."""

    data: bytes
    filename: str = ""
    dataset: str = ""
    trigger: str = ""


@dataclass(frozen=True)
class ProviderSettings:
    """What a provider needs, resolved from a CaptionProvider row (the api key read from the
    environment variable the row names, never stored)."""

    type: str
    model: str = ""
    base_url: str = ""
    api_key: str = ""
    prompt: str = ""
    timeout: float = 60.0
    max_side: int = 768
    max_tokens: int = 200
    temperature: float = 0.2
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Availability:
    ok: bool
    detail: str


class CaptionError(Exception):
    """Base of the provider errors; `message` is what the user sees."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class RetryableError(CaptionError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ImageError(CaptionError):
    pass


class FatalError(CaptionError):
    pass


class Provider(Protocol):
    settings: ProviderSettings
    # How many images one `caption_batch` call should get; 1 for providers that send one request each.
    batch_size: int

    def caption_batch(self, items: list[CaptionInput], prompt: str) -> list[Caption | CaptionError]:
        """One result per item, in order; a per-image failure is returned, a run-wide one raised."""
        ...

    def check(self) -> Availability:
        ...

    def close(self) -> None:
        ...
