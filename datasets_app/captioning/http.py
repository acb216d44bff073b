"""What the HTTP providers share: one httpx client each, status codes mapped to the typed errors
with a message that says what to fix, `Retry-After` parsing, and defensive JSON reading."""

from __future__ import annotations

import email.utils
import functools
import json
import ssl
import time
from typing import Any

import httpx

from datasets_app.captioning.base import Availability, CaptionError, FatalError, ImageError, RetryableError

_FIX = {
    401: "the server refused the API key: check the environment variable {env} on the workers",
    402: "the account is out of credits: top it up or switch provider",
    403: "the API key is not allowed to use this model: check its permissions",
    404: "the server has no such endpoint or model: check the base URL and the model name",
}


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: httpx builds a new one (loading the CA bundle, ~50 ms)
    for every client otherwise, which a run pays before its first request."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def make_client(timeout: float, api_key: str = "", headers: dict[str, str] | None = None) -> httpx.Client:
    all_headers = {"User-Agent": "lorasite-captioner/1"}
    if api_key:
        all_headers["Authorization"] = f"Bearer {api_key}"
    all_headers.update(headers or {})
    # Connection pool sized for the highest concurrency a provider allows, so threads never queue
    # on the pool itself.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.Client(timeout=httpx.Timeout(timeout), headers=all_headers, limits=limits, verify=_tls_context())


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date (RFC 9110); None when absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_text(body: Any) -> str:
    """The human part of an error body, whatever shape the server chose: `{"error": "..."}`,
    `{"error": {"message": ..., "code": 429}}` (some send `code` as a number), `{"detail": ...}`."""
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message") or error.get("msg") or error.get("type") or error.get("code")
        if isinstance(error, list):
            error = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in error)
        if error is not None:
            return str(error)[:300]
    if isinstance(body, str):
        return body[:300]
    return ""


def read_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None


def raise_for_status(response: httpx.Response, provider: str, api_key_env: str = "") -> None:
    """Map a non-2xx answer to the typed errors. 429 and 5xx are retried; 401/402/403/404 stop the
    run with what to fix; other 4xx fail this image (the server rejected this request)."""
    status = response.status_code
    if status < 400:
        return
    body = read_json(response)
    detail = error_text(body) or response.reason_phrase
    if status == 429 or status >= 500:
        hint = retry_after_seconds(response.headers.get("Retry-After"))
        if hint is None and isinstance(body, dict) and isinstance(body.get("estimated_time"), int | float):
            hint = float(body["estimated_time"])  # Hugging Face: "model is loading"
        raise RetryableError(f"{provider} answered {status}: {detail}", retry_after=hint)
    if status in _FIX:
        fix = _FIX[status].format(env=api_key_env or "named in the provider")
        raise FatalError(f"{provider} answered {status} ({detail}): {fix}.")
    raise ImageError(f"{provider} rejected the image ({status}): {detail}")


def post(client: httpx.Client, url: str, provider: str, api_key_env: str = "", **kwargs: Any) -> httpx.Response:
    """POST with transport failures mapped: timeouts and dropped connections are retryable, a
    refused connection or a bad URL is fatal (nothing is listening there)."""
    try:
        response = client.post(url, **kwargs)
    except httpx.TimeoutException:
        raise RetryableError(f"{provider} did not answer within {client.timeout.read:g} s") from None
    except httpx.ConnectError as exc:
        raise FatalError(f"cannot reach {provider} at {url} ({type(exc).__name__}): check the base URL "
                         "and that the server is running") from None
    except httpx.TransportError as exc:
        raise RetryableError(f"{provider} connection failed ({type(exc).__name__})") from None
    except httpx.InvalidURL:
        raise FatalError(f"{url!r} is not a valid URL: fix the provider's base URL") from None
    raise_for_status(response, provider, api_key_env)
    return response


def json_body(response: httpx.Response, provider: str) -> Any:
    body = read_json(response)
    if body is None:
        raise ImageError(f"{provider} sent an answer that is not JSON")
    return body


def probe(client: httpx.Client, url: str, provider: str) -> tuple[Availability, Any]:
    """GET `url` for an availability check; never raises."""
    try:
        response = client.get(url, timeout=5.0)
    except httpx.HTTPError as exc:
        return Availability(False, f"unreachable ({type(exc).__name__})"), None
    if response.status_code in (401, 403):
        return Availability(False, f"the server refused the API key ({response.status_code})"), None
    if response.status_code >= 400:
        return Availability(False, f"{provider} answered {response.status_code}"), None
    return Availability(True, "reachable"), read_json(response)


def results_for(items: list, caption_one) -> list:
    """Per-image errors become results; run-wide errors (fatal, retryable) propagate to the runner."""
    out = []
    for item in items:
        try:
            out.append(caption_one(item))
        except ImageError as exc:
            out.append(exc)
    return out


__all__ = ["CaptionError", "json_body", "make_client", "post", "probe", "raise_for_status", "read_json",
           "results_for", "retry_after_seconds"]
