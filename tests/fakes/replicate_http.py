"""HTTP plumbing of the Replicate fake: a threaded keep-alive server, replies, multipart, failure rules.

The server hands every request to `app.dispatch(role, method, target, headers, body)` and writes the
Reply it gets back with a Content-Length, so clients can keep the connection alive.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Rule:
    """A failure switched on by a test: matching requests are delayed and/or answered with `status`."""

    method: str | None
    path: re.Pattern[str]
    status: int | None
    times: int
    detail: str | None = None
    headers: dict[str, str] | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Recorded:
    server: str  # "api" or "delivery"
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] | None = None


def problem(status: int, detail: str, title: str | None = None, **extra: Any) -> Reply:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if title:
        body["title"] = title
    body.update(extra)
    return Reply(status, json.dumps(body).encode(), "application/problem+json")


def ok(data: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode())


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, str | None, bytes]]:
    """name -> (filename, content type, bytes) for a multipart/form-data body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode()
    fields = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        if name:
            fields[name.group(1)] = (filename.group(1) if filename else None, headers.get("content-type"),
                                     content.removesuffix(b"\r\n"))
    return fields


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients use it

    def log_message(self, format: str, *args: Any) -> None:  # tests read fake.requests instead
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _serve(self) -> None:
        reply = self.server.app.dispatch(self.server.role, self.command, self.path, self.headers, self._body())
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for key, value in (reply.headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_DELETE = do_PUT = do_QUERY = _serve


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, app: Any, role: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app, self.role = app, role
