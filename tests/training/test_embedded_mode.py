"""Embedded mode, as `make demo` runs it: one `manage.py serve` process with the stub broker, worker
threads and the in-memory channel layer trains a job and streams its progress over a websocket."""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest
import websockets

from lorasite.accounts.models import ApiToken
from tests.services import free_port, production_env, start_process, stop_process, wait_for_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_serve_trains_in_process_and_streams_progress(settings, member, dataset_a, tiny_base_model):
    token = ApiToken.issue(member, "embedded")[1]
    port = free_port()
    env = production_env(LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR), OMP_NUM_THREADS="1")
    server = start_process([sys.executable, "manage.py", "serve", "--port", str(port)], env)
    try:
        wait_for_port(port, server, timeout=60)
        base = f"http://127.0.0.1:{port}"
        response = httpx.post(f"{base}/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30, json={
            "dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
            "config": {"resolution": 64, "max_steps": 20, "batch_size": 2, "rank": 4}})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        async def watch():
            seen = []
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/jobs/{job_id}/",
                                          additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                async with asyncio.timeout(120):
                    while True:
                        message = json.loads(await ws.recv())
                        seen.append(message)
                        if message.get("type") == "status" and message["status"] in {"completed", "failed"}:
                            return seen

        messages = asyncio.run(watch())
    finally:
        log = stop_process(server)
    assert messages[-1]["status"] == "completed", log[-3000:]
    steps = [m["step"] for m in messages if m["type"] == "progress"]
    assert steps and steps[-1] == 20
