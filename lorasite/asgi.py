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
