"""Websocket URL routes of every app."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from lorasite.accounts.consumers import TeamConsumer


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any other websocket path (a bad id, a typo): refused like a missing job, not a routing traceback."""

    async def connect(self):
        await self.close(code=4404)


def websocket_urlpatterns() -> list:
    from datasets_app.routing import websocket_urlpatterns as datasets_routes
    from training_app.routing import websocket_urlpatterns as training_routes

    return [
        path("ws/teams/<uuid:team_id>/", TeamConsumer.as_asgi()),
        *training_routes,
        *datasets_routes,
        re_path(r"", NoSuchSocket.as_asgi()),
    ]
