"""daphne serving the real ASGI app: a member's websocket receives what another process publishes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
import websockets
from django.test import Client

from tests.services import (
    bin_path,
    free_port,
    production_env,
    require_redis,
    start_process,
    stop_process,
    wait_for_port,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def daphne_server():
    redis_url = require_redis()
    port = free_port()
    env = production_env(REDIS_URL=redis_url, CHANNEL_LAYER_PREFIX=f"lorasite-test-{uuid.uuid4().hex[:8]}",
                         ALLOWED_HOSTS="127.0.0.1")
    process = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"], env)
    try:
        wait_for_port(port, process)
        yield port, env
    finally:
        stop_process(process)


def session_cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def receive_until(ws, predicate, timeout=10.0):
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if predicate(message):
                return message


def test_member_receives_a_message_published_by_another_process(daphne_server, team_a, member):
    port, env = daphne_server
    cookie = session_cookie_for(member)
    payload = {"type": "status", "job": str(uuid.uuid4()), "status": "running", "error": None}
    publish = (
        "import django, json, sys; django.setup(); from lorasite.realtime import publish; "
        "publish(sys.argv[1], json.loads(sys.argv[2]))"
    )

    async def scenario():
        url = f"ws://127.0.0.1:{port}/ws/teams/{team_a.uuid}/"
        async with websockets.connect(url, additional_headers={"Cookie": cookie},
                                      origin=f"http://127.0.0.1:{port}") as ws:
            hello = await receive_until(ws, lambda m: True)
            assert hello["type"] == "snapshot" and hello["slug"] == "alpha"
            result = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", publish, f"team.{team_a.uuid}", json.dumps(payload)],
                env=env, capture_output=True, text=True, timeout=60,
            )
            assert result.returncode == 0, result.stderr
            return await receive_until(ws, lambda m: m.get("type") == "status")

    assert asyncio.run(scenario()) == payload


def test_non_member_is_refused_by_daphne(daphne_server, team_a, member, outsider):
    port, _ = daphne_server
    cookie = session_cookie_for(outsider)

    async def scenario():
        url = f"ws://127.0.0.1:{port}/ws/teams/{team_a.uuid}/"
        async with websockets.connect(url, additional_headers={"Cookie": cookie},
                                      origin=f"http://127.0.0.1:{port}") as ws:
            await ws.recv()

    with pytest.raises((websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed)):
        asyncio.run(scenario())
