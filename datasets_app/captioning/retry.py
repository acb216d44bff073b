"""Calling a provider with retries: exponential backoff with full jitter, honouring the server's
own hint (`Retry-After`, Hugging Face's `estimated_time`) when it gives one, and stopping early
when the run is cancelled."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from datasets_app.captioning.base import RetryableError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_seconds: float = 0.5
    max_seconds: float = 30.0
    # A server asking for longer than this is not waited for: the image fails and the run goes on.
    max_hint_seconds: float = 120.0


class Cancelled(Exception):
    """The run was cancelled while this call waited to retry."""


def backoff_seconds(attempt: int, policy: RetryPolicy, hint: float | None, rng: random.Random) -> float:
    """How long to wait before retry number `attempt` (1-based). A server hint wins (plus a little
    jitter so a crowd of threads does not return at the same instant); otherwise full jitter over
    an exponentially growing window."""
    if hint is not None and hint > 0:
        return min(hint, policy.max_hint_seconds) + rng.uniform(0, min(1.0, hint * 0.1))
    window = min(policy.max_seconds, policy.base_seconds * 2 ** (attempt - 1))
    return rng.uniform(window / 2, window)


def call_with_retries(call: Callable[[], T], policy: RetryPolicy, wait: Callable[[float], bool],
                      rng: random.Random | None = None) -> T:
    """`call()` until it returns or raises something other than RetryableError. `wait(seconds)`
    sleeps and returns True when the run was cancelled meanwhile (then `Cancelled` is raised).
    After the last attempt the RetryableError propagates."""
    rng = rng or random.Random()
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except RetryableError as exc:
            if attempt == policy.attempts:
                raise
            if exc.retry_after is not None and exc.retry_after > policy.max_hint_seconds:
                raise
            if wait(backoff_seconds(attempt, policy, exc.retry_after, rng)):
                raise Cancelled() from exc
    raise AssertionError("unreachable")  # pragma: no cover


def caption_one(provider, item, prompt: str, policy: RetryPolicy, wait: Callable[[float], bool],
                rng: random.Random | None = None):
    """One image through a one-request-per-image provider, with retries; raises the typed errors."""
    from datasets_app.captioning.base import CaptionError

    result = call_with_retries(lambda: provider.caption_batch([item], prompt)[0], policy, wait, rng)
    if isinstance(result, CaptionError):
        raise result
    return result
