"""Failed sign-ins slow down: after AUTH_FAILURES_PER_MINUTE failures from one address (or for one
username), further attempts are refused with 429 for the rest of the minute. Counted in Django's
cache (Redis when REDIS_URL is set, so every process shares the count)."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

WINDOW_SECONDS = 60


def _key(kind: str, subject: str) -> str:
    return f"lorasite:auth-failures:{kind}:{subject}"


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def is_throttled(kind: str, *subjects: str) -> bool:
    limit = settings.AUTH_FAILURES_PER_MINUTE
    return any((cache.get(_key(kind, s)) or 0) >= limit for s in subjects if s)


def record_failure(kind: str, *subjects: str) -> None:
    for subject in subjects:
        if not subject:
            continue
        key = _key(kind, subject)
        # add() starts the window once; incr() keeps its expiry.
        cache.add(key, 0, timeout=WINDOW_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between the two calls
            cache.set(key, 1, timeout=WINDOW_SECONDS)
