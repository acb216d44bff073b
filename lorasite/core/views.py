"""Error pages: `/api/*` always answers JSON, whatever failed; pages answer Django's HTML."""

from __future__ import annotations

import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

DATABASE_DOWN = "The database is not answering; try again in a moment."
RETRY_AFTER_SECONDS = "5"


def _api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _api(request):
        # Django raises this for bodies over DATA_UPLOAD_MAX_MEMORY_SIZE and malformed requests.
        return JsonResponse({"detail": "The request could not be read (too large, or malformed)."}, status=400)
    return defaults.bad_request(request, exception)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _api(request):
        return JsonResponse({"detail": "Not Found"}, status=404)
    return defaults.page_not_found(request, exception)


def database_unreachable(exc: BaseException | None) -> bool:
    """A lost or refused connection (or no free one in the pool): not a bug, and nothing the client did.
    Errors the server reported about a statement (deadlocks, constraints) carry an SQLSTATE; these do not."""
    if isinstance(exc, InterfaceError):
        return True
    return isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) is None


def server_error(request: HttpRequest) -> HttpResponse:
    # Django calls this inside its `except` block: the exception is still the current one.
    if database_unreachable(sys.exc_info()[1]):
        if _api(request):
            response = JsonResponse({"detail": DATABASE_DOWN}, status=503)
        else:  # no template: rendering the site's base would ask the database for the user
            response = HttpResponse(f"<!doctype html><title>Unavailable · lorasite</title><h1>Unavailable</h1>"
                                    f"<p>{DATABASE_DOWN}</p>", status=503)
        response["Retry-After"] = RETRY_AFTER_SECONDS
        return response
    if _api(request):
        return JsonResponse({"detail": "Something went wrong on our side; it has been logged."}, status=500)
    return defaults.server_error(request)
