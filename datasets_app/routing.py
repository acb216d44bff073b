"""Websocket routes for dataset groups (`dataset.<uuid>`)."""

from __future__ import annotations

from django.urls import path

from datasets_app.consumers import DatasetConsumer

websocket_urlpatterns: list = [
    path("ws/datasets/<uuid:dataset_id>/", DatasetConsumer.as_asgi()),
]
