"""Websocket URL routes of every app."""

from __future__ import annotations

from django.urls import path

from lorasite.accounts.consumers import TeamConsumer


def websocket_urlpatterns() -> list:
    from datasets_app.routing import websocket_urlpatterns as datasets_routes
    from training_app.routing import websocket_urlpatterns as training_routes

    return [
        path("ws/teams/<uuid:team_id>/", TeamConsumer.as_asgi()),
        *training_routes,
        *datasets_routes,
    ]
