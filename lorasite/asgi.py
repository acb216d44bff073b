"""ASGI entry point: HTTP through Django, websockets through Channels with session or token auth."""

from __future__ import annotations

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lorasite.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from lorasite.accounts.auth import BearerTokenWebsocketMiddleware, WebsocketOriginValidator  # noqa: E402
from lorasite.routing import websocket_urlpatterns  # noqa: E402

http_app = django_asgi_app
if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)


async def refuse_dot_segments(scope, receive, send):
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": b"Not Found"})


class NoDotSegments:
    """A path with `..` segments names nothing we serve: 404 before the static handler turns it into a
    SuspiciousFileOperation logged at ERROR with the server's absolute paths."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if ".." in scope.get("path", "").replace("\\", "/").split("/"):
            return await refuse_dot_segments(scope, receive, send)
        return await self.inner(scope, receive, send)


http_app = NoDotSegments(http_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": WebsocketOriginValidator(
            AuthMiddlewareStack(BearerTokenWebsocketMiddleware(URLRouter(websocket_urlpatterns())))
        ),
    }
)

# Long-lived start-up objects (modules, URL patterns, templates) need never be scanned again: without
# this, full collections in a busy daphne take 60-80 ms and set the websocket latency tail.
gc.collect()
gc.freeze()
