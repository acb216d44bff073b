"""Edge checks every request passes before a view runs."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

NUL = "\x00"


def _nul_location(value: Any, loc: list) -> list | None:
    """Where in parsed JSON (or a string) a NUL character is, as a ninja-style loc; None if nowhere."""
    if isinstance(value, str):
        return loc if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_location(key, [*loc, key]) or _nul_location(item, [*loc, key])
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_location(item, [*loc, index])
            if found:
                return found
    return None


def nul_location(request: HttpRequest) -> list | None:
    if NUL in request.path:
        return ["path"]
    for key, values in request.GET.lists():
        if NUL in key or any(NUL in v for v in values):
            return ["query", key.replace(NUL, "\\x00")]
    content_type = request.content_type or ""
    if content_type == "application/json":
        body = request.body
        if b"\\u0000" in body.lower():
            try:
                return _nul_location(json.loads(body), ["body"])
            except ValueError:
                return None  # not JSON: the view answers that
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        # Form fields only: uploaded files are binary and go through their own validation.
        for key, values in request.POST.lists():
            if NUL in key or any(NUL in v for v in values):
                return ["form", key.replace(NUL, "\\x00")]
    return None


class RejectNulCharacters:
    """Postgres cannot store NUL (\\x00) in text, so a NUL anywhere in a request's text would end as
    a 500 deep in a view; refuse it here with 422, naming the field."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        loc = nul_location(request)
        if loc is None:
            return self.get_response(request)
        message = "contains a NUL (\\x00) character, which text fields cannot hold"
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": f"{loc[-1]} {message}.", "errors": [{"loc": loc, "msg": message}]},
                                status=422)
        return HttpResponse(f"{loc[-1]} {message}. Go back and remove it.", status=422,
                            content_type="text/plain; charset=utf-8")


class SecurityHeaders:
    """Content-Security-Policy on every response (Django's SecurityMiddleware sends nosniff, the
    referrer policy, COOP and, where configured, HSTS; XFrameOptionsMiddleware the legacy DENY)."""

    def __init__(self, get_response):
        from django.conf import settings

        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
