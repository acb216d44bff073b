"""Typed errors for the lorasite client: one class per kind of answer, each carrying the server's text."""

from __future__ import annotations

from typing import Any


class LorasiteError(Exception):
    """Any error the portal answered (or a transport failure): `message` is the server's own text,
    `field` the first field it named ("config.learning_rate"), `errors` every per-field message."""

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None,
                 errors: list[dict[str, Any]] | None = None, body: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.errors = errors or []
        self.body = body

    def __str__(self) -> str:
        prefix = f"HTTP {self.status}: " if self.status else ""
        return prefix + self.message


class AuthenticationError(LorasiteError):
    """401: no token, a wrong one, or a revoked one."""


class PermissionDeniedError(LorasiteError):
    """403: the token's user may see the object but their role does not allow this action."""


class NotFoundError(LorasiteError):
    """404: missing, or another team's (the portal answers both the same way)."""


class ValidationError(LorasiteError):
    """422 (or 400): the request was refused as invalid; `field` says which part."""


class ConflictError(LorasiteError):
    """409: the object is not in a state that allows this (e.g. cancelling a finished job)."""


class RateLimitedError(LorasiteError):
    """429: too many failed sign-ins from this address."""


class ServerError(LorasiteError):
    """5xx, or an answer that is not the JSON the API promises."""


class ConnectionFailed(LorasiteError):
    """The portal could not be reached (refused, reset, timed out)."""


_BY_STATUS: dict[int, type[LorasiteError]] = {
    400: ValidationError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 422: ValidationError, 429: RateLimitedError,
}


def field_name(loc: list[Any] | tuple[Any, ...]) -> str:
    """`["body", "payload", "config", "rank"]` → `"config.rank"`: the request's own names, without the
    parts that only say where in the request ninja looked."""
    parts = [str(p) for p in loc]
    while parts and parts[0] in {"body", "query", "path", "form", "header", "payload"}:
        parts = parts[1:]
    return ".".join(parts) if parts else ".".join(str(p) for p in loc)


def error_from_response(status: int, body: Any, fallback_text: str = "") -> LorasiteError:
    """Map an error answer to its class. The portal's domain errors send
    `{"detail": "...", "errors": [{"loc": [...], "msg": "..."}]}`; ninja's own request validation sends
    `{"detail": [{"loc": [...], "msg": "..."}]}`."""
    errors: list[dict[str, Any]] = []
    message = ""
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):
            errors = [e for e in detail if isinstance(e, dict)]
            message = "; ".join(f"{field_name(e.get('loc', []))}: {e.get('msg', '')}" for e in errors)
        elif detail is not None:
            message = str(detail)
        if isinstance(body.get("errors"), list):
            errors = [e for e in body["errors"] if isinstance(e, dict)]
    if not message:
        message = fallback_text.strip()[:500] or f"the server answered HTTP {status}"
    field = field_name(errors[0].get("loc", [])) if errors and errors[0].get("loc") else None
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else LorasiteError)
    return cls(message, status=status, field=field, errors=errors, body=body)
