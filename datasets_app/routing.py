"""Websocket routes for dataset groups (`dataset.<uuid>`)."""

from __future__ import annotations

websocket_urlpatterns: list = []
