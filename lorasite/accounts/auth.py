"""API and websocket authentication: `Authorization: Bearer <token>` or the browser session."""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from lorasite.accounts import throttle
from lorasite.accounts.models import ApiToken


class BearerToken(HttpBearer):
    def authenticate(self, request, token: str):
        user = ApiToken.authenticate(token)
        if user is not None:
            request.user = user
            return user
        # A valid token always works; guessing is what slows down.
        address = throttle.client_address(request)
        throttle.record_failure("token", address)
        if throttle.is_throttled("token", address):
            raise HttpError(429, "Too many failed sign-ins from this address; wait a minute and check the token.")
        return None


class SignedInSession(SessionAuth):
    """The browser session, with CSRF on writes; a request with no signed-in session is simply not
    authenticated (401), rather than refused for a CSRF token it could never have had (403)."""

    def _get_key(self, request):
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


# Tried in order: scripts send a token, browsers send the session cookie (with CSRF on writes).
API_AUTH = [BearerToken(), SignedInSession()]


class BearerTokenWebsocketMiddleware:
    """Lets scripts open websockets with `Authorization: Bearer <token>` instead of a session cookie.

    Runs inside AuthMiddlewareStack, so a token only replaces an anonymous session user.
    """

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            raw = _bearer_from_headers(scope.get("headers", []))
            if raw is not None:
                token = await database_sync_to_async(ApiToken.find_active)(raw)
                scope = dict(scope, user=token.user if token else AnonymousUser(),
                             api_token_id=token.pk if token else None)
        return await self.inner(scope, receive, send)


def current_socket_user(scope):
    """The socket's user as the database sees them now: None once deactivated, or once the token the
    socket was opened with is revoked. (A signed-out session ends with its cookie; open sockets of
    a removed member are caught by the membership check the consumer repeats.)"""
    from django.contrib.auth import get_user_model

    user = scope.get("user")
    if user is None or not user.is_authenticated:
        return None
    fresh = get_user_model().objects.filter(pk=user.pk, is_active=True).first()
    token_id = scope.get("api_token_id")
    if fresh is None or (token_id and not ApiToken.objects.active().filter(pk=token_id).exists()):
        return None
    return fresh


def _bearer_from_headers(headers) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            return parse_bearer(value.decode("latin-1"))
    return None


def parse_bearer(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, or None."""
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        return credential.strip()
    return None


class WebsocketOriginValidator(OriginValidator):
    """Browsers always send Origin on websockets, so a foreign Origin (cross-site hijacking of the
    session cookie) is refused. Scripts send none and authenticate with a bearer token instead."""

    def __init__(self, application):
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = ["localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, allowed)

    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)
