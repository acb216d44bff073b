"""Following a job over its websocket: an iterator that reconnects after a dropped socket, resumes
from the snapshot the server sends on every connect, and ends when the job does."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from lorasite_client.errors import ConnectionFailed, NotFoundError, PermissionDeniedError
from lorasite_client.models import JobMessage


class JobSource(Protocol):
    """What following needs of a `Client` (named here so this module does not import the client's)."""

    base_url: str
    token: str
    timeout: float

    def get_job(self, job_id: str) -> Any: ...

# The job consumer's close codes: the socket's user cannot see the job (or no longer may).
CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403


def websocket_url(base_url: str, path: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + path
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):] + path
    return base + path


def follow_job(client: JobSource, job_id: str, *, idle_seconds: float = 30.0, reconnect_delay: float = 0.5,
               max_reconnect_delay: float = 10.0, max_attempts: int = 30,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[JobMessage]:
    """Yield the job's messages until it completes, fails or is cancelled.

    The first message is a `snapshot` (status, step, loss history). A dropped socket is reopened with
    backoff; the server's new snapshot is yielded with `resumed=True`, and progress messages that the
    snapshot already covered are skipped. `max_attempts` failed connections in a row raise
    ConnectionFailed. When nothing arrives for `idle_seconds`, the job is asked for over HTTP, so a
    status message lost in transit cannot leave the iterator waiting forever.
    """
    job_id = str(job_id)
    client.get_job(job_id)  # a 401/404 is raised here, typed, before any socket opens
    url = websocket_url(client.base_url, f"/ws/jobs/{job_id}/")
    headers = {"Authorization": f"Bearer {client.token}"}
    last_step = -1
    reconnected = False
    failures = 0
    while True:
        try:
            socket = connect(url, additional_headers=headers, open_timeout=client.timeout,
                             close_timeout=2, max_size=2**24)
        except InvalidStatus:
            # The consumer refuses before accepting (a 403 handshake): ask over HTTP why, typed.
            job = client.get_job(job_id)
            if job.finished:
                yield JobMessage("status", {"type": "status", "job": job_id, "status": job.status,
                                            "error": job.error or None}, resumed=reconnected)
                return
            failures += 1
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            failures += 1
            if failures >= max_attempts:
                raise ConnectionFailed(f"could not reopen the job's websocket after {failures} tries: {exc}") from exc
        else:
            with socket:
                try:
                    while True:
                        try:
                            raw = socket.recv(timeout=idle_seconds)
                        except TimeoutError:
                            job = client.get_job(job_id)
                            if job.finished:
                                yield JobMessage("status", {"type": "status", "job": job_id, "status": job.status,
                                                            "error": job.error or None})
                                return
                            continue
                        data = json.loads(raw)
                        kind = data.get("type", "")
                        if kind == "pong":
                            continue
                        if kind == "snapshot":
                            failures = 0
                            last_step = data.get("step") or 0
                        elif kind == "progress":
                            step = data.get("step")
                            if step is not None:
                                if step <= last_step:
                                    continue  # sent again between joining the group and the snapshot
                                last_step = step
                        message = JobMessage(kind, data, resumed=reconnected and kind == "snapshot")
                        yield message
                        if message.finished:
                            return
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    if code == CLOSE_NOT_FOUND:
                        raise NotFoundError("The job is not visible to this token.", status=404) from exc
                    if code == CLOSE_FORBIDDEN:
                        raise PermissionDeniedError("This token lost access to the job.", status=403) from exc
        if failures >= max_attempts:
            raise ConnectionFailed(f"the job's websocket kept refusing ({failures} tries)")
        reconnected = True
        sleep(min(max_reconnect_delay, reconnect_delay * 2 ** min(failures, 6)))
