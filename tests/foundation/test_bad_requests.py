"""Bad paths and bodies against a real daphne: 404/400 answers, JSON under /api/, and nothing logged at
ERROR (no tracebacks, no absolute server paths)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import websockets

from lorasite.accounts.models import ApiToken
from tests.services import (
    REPO,
    bin_path,
    free_port,
    production_env,
    start_process,
    stop_process,
    wait_for_port,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def raw_get(port: int, target: str) -> bytes:
    """A request line sent as written: HTTP clients would remove the dot segments first."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def open_bad_socket(port: int) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/jobs/not-a-uuid/"):
            pass


def test_bad_paths_and_bodies_get_plain_answers_and_log_nothing_alarming(member):
    token = ApiToken.issue(member, "edges")[1]
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"],
                        production_env(SERVE_STATIC="true", ALLOWED_HOSTS="127.0.0.1"))
    try:
        wait_for_port(port, web)
        for target in ("/static/../../lorasite/settings.py", "/static/..%2f..%2florasite%2fsettings.py",
                       "/static/lorasite/../../../lorasite/settings.py"):
            answer = raw_get(port, target)
            assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
            assert b"SECRET_KEY" not in answer
        asyncio.run(open_bad_socket(port))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                          timeout=30) as client:
            too_big = client.post("/api/tokens", content=b'{"name": "' + b"x" * (11 * 1024 * 1024) + b'"}',
                                  headers={"Content-Type": "application/json"})
            assert too_big.status_code == 400
            assert too_big.json()["detail"].startswith("The request could not be read")
            missing = client.get("/api/no-such-thing")
            assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    finally:
        log = stop_process(web)
    assert "Traceback" not in log and " ERROR " not in log, log
    assert "No route found" not in log and str(REPO) not in log, log
