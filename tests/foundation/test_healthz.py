"""GET /healthz reports each component and is 200 only when all are reachable."""

from __future__ import annotations

import pytest
from channels.layers import channel_layers
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db


def test_healthz_is_200_when_everything_answers():
    response = Client().get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name for name, check in body["checks"].items() if check["ok"]} == {"database", "broker", "channel_layer"}


def test_healthz_is_503_and_names_the_component_when_the_channel_layer_is_down():
    broken = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                          "CONFIG": {"hosts": ["redis://:hunter2@127.0.0.1:1/0"]}}}
    with override_settings(CHANNEL_LAYERS=broken):
        channel_layers.backends.clear()
        try:
            response = Client().get("/healthz")
        finally:
            channel_layers.backends.clear()
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["channel_layer"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    assert "hunter2" not in response.content.decode()


def test_favicon_ico_leads_to_the_icon_every_page_names(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("lorasite/favicon.svg")
    from django.contrib.staticfiles import finders

    assert finders.find("lorasite/favicon.svg")
    page = client.get("/accounts/login/").content.decode()
    assert 'rel="icon"' in page and "lorasite/favicon.svg" in page
