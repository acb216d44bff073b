"""Loopback servers speaking the captioning protocols (Hugging Face image-to-text, OpenAI-compatible
vision chat, Ollama native), started in-process for one test. Each checks the request the way the
real server would (400 for a malformed one), decodes the image it was sent, and answers with a
caption naming the image's size, unless a test scripted other replies (errors, delays, garbage)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict/list → JSON; bytes/str → sent as is; None → the protocol's normal answer
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes
    image_size: tuple[int, int] | None = None
    image_format: str | None = None
    json: object = None
    at: float = field(default_factory=time.monotonic)


class FakeCaptionServer:
    """`protocol` is "hf", "openai" or "ollama". `caption` may use {width}, {height}, {n} (the
    request number) and {prompt}. `delay` is added to every answer (the benchmark's 200 ms)."""

    def __init__(self, protocol: str, caption: str = "The image shows a shape of {width}x{height} pixels",
                 model: str = "fake-vision-1", delay: float = 0.0, api_key: str = ""):
        self.protocol, self.caption, self.model, self.delay, self.api_key = protocol, caption, model, delay, api_key
        self.script: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        base = f"http://{host}:{port}"
        return {"openai": f"{base}/v1", "hf": f"{base}/models/{{model}}"}.get(self.protocol, base)

    def then(self, *replies: Reply) -> FakeCaptionServer:
        self.script.extend(replies)
        return self

    def __enter__(self) -> FakeCaptionServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    # --- protocol ---------------------------------------------------------------------------

    def _normal_answer(self, seen: Seen, n: int):
        width, height = seen.image_size or (0, 0)
        prompt = ""
        if self.protocol == "openai":
            prompt = seen.json["messages"][0]["content"][0]["text"]
        elif self.protocol == "ollama":
            prompt = seen.json["prompt"]
        text = self.caption.format(width=width, height=height, n=n, prompt=prompt)
        if self.protocol == "hf":
            return [{"generated_text": text}]
        if self.protocol == "openai":
            return {"id": f"chatcmpl-{n}", "object": "chat.completion", "model": self.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}]}
        return {"model": self.model, "created_at": "2025-01-01T00:00:00Z", "response": text, "done": True}

    def _parse(self, seen: Seen) -> str | None:
        """Decode the request as the real server would; returns an error text for a 400."""
        try:
            if self.protocol == "hf":
                if seen.path != f"/models/{self.model}":
                    return "not found"
                image = seen.body
            else:
                seen.json = json.loads(seen.body)
                if self.protocol == "openai":
                    body = seen.json
                    assert body["stream"] is False and isinstance(body["max_tokens"], int)
                    assert isinstance(body["temperature"], int | float)
                    parts = body["messages"][0]["content"]
                    assert parts[0]["type"] == "text" and parts[1]["type"] == "image_url"
                    url = parts[1]["image_url"]["url"]
                    assert url.startswith("data:image/jpeg;base64,")
                    image = base64.b64decode(url.split(",", 1)[1], validate=True)
                else:
                    body = seen.json
                    assert body["stream"] is False and isinstance(body["options"], dict)
                    image = base64.b64decode(body["images"][0], validate=True)
            with Image.open(io.BytesIO(image)) as img:
                seen.image_size, seen.image_format = img.size, img.format
        except Exception as exc:
            return f"malformed request: {type(exc).__name__} {exc}"
        return None

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body, headers: dict | None = None):
                data = body if isinstance(body, bytes) else (
                    body.encode() if isinstance(body, str) else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                fake.seen.append(Seen("GET", self.path, dict(self.headers), b""))
                if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._send(401, {"error": "Invalid credentials"})
                if fake.protocol == "openai" and self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                if fake.protocol == "ollama" and self.path == "/api/tags":
                    return self._send(200, {"models": [{"name": f"{fake.model}:latest"}]})
                if fake.protocol == "hf" and self.path == f"/models/{fake.model}":
                    return self._send(405, {"error": "Method not allowed"})
                return self._send(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen("POST", self.path, dict(self.headers), self.rfile.read(length))
                with fake.lock:
                    fake.seen.append(seen)
                    n = len(fake.posts())
                    reply = fake.script.popleft() if fake.script else Reply()
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay + reply.delay)
                    if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                        return self._send(401, {"error": {"message": "Incorrect API key provided", "code": 401}})
                    wanted = {"hf": None, "openai": "/v1/chat/completions", "ollama": "/api/generate"}[fake.protocol]
                    if wanted and self.path != wanted:
                        return self._send(404, {"error": "not found"})
                    problem = fake._parse(seen)
                    if problem:
                        return self._send(404 if problem == "not found" else 400, {"error": problem})
                    body = reply.body if reply.body is not None else fake._normal_answer(seen, n)
                    self._send(reply.status, body, reply.headers)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        return Handler
