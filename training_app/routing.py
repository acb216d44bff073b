"""Websocket routes for job groups (`job.<uuid>`)."""

from __future__ import annotations

websocket_urlpatterns: list = []
