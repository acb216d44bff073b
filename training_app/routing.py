"""Websocket routes for job groups (`job.<uuid>`)."""

from __future__ import annotations

from django.urls import path

from training_app.consumers import JobConsumer

websocket_urlpatterns: list = [
    path("ws/jobs/<uuid:job_id>/", JobConsumer.as_asgi()),
]
