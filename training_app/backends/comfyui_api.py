"""A small client for ComfyUI's HTTP and websocket API (no Django): the calls the backend makes.

One keep-alive httpx client per backend run, safe to share between the upload threads; every call
has a timeout. Shapes are ComfyUI's own (server.py): see docs/backends.md and the protocol notes.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

MAX_WEIGHTS_BYTES = 4 * 1024 ** 3


class ComfyUIError(Exception):
    """A call failed; `retryable` when trying again later may work (network, 5xx)."""

    def __init__(self, message: str, retryable: bool = False, status: int | None = None):
        super().__init__(message)
        self.message, self.retryable, self.status = message, retryable, status


class PromptRejected(ComfyUIError):
    """POST /prompt answered 400: `error` and `node_errors` as ComfyUI sent them."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]):
        super().__init__(error.get("message") or "prompt rejected", status=400)
        self.error, self.node_errors = error, node_errors


class ComfyUIClient:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0, max_connections: int = 16):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._headers = headers
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                 limits=httpx.Limits(max_connections=max_connections,
                                                     max_keepalive_connections=max_connections))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ComfyUIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain calls ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ComfyUIError(f"the ComfyUI server did not answer {path} within {self.timeout:.0f} s",
                               retryable=True) from None
        except httpx.HTTPError as exc:
            raise ComfyUIError(f"cannot reach the ComfyUI server ({type(exc).__name__})", retryable=True) from None
        if response.status_code >= 500:
            raise ComfyUIError(f"the ComfyUI server failed on {path} (HTTP {response.status_code})",
                               retryable=True, status=response.status_code)
        if response.status_code in (401, 403):
            raise ComfyUIError(f"the ComfyUI server refused our credentials (HTTP {response.status_code}); "
                               "check the token variable of this backend", status=response.status_code)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ComfyUIError(f"the ComfyUI server answered {path} with HTTP {response.status_code}",
                               status=response.status_code)
        try:
            return response.json()
        except ValueError:
            raise ComfyUIError(f"the ComfyUI server sent something other than JSON for {path}") from None

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/system_stats")

    def object_info(self) -> dict[str, Any]:
        return self._json("GET", "/object_info")

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The prompt's history entry once it has finished; None before (ComfyUI answers {})."""
        return self._json("GET", f"/history/{prompt_id}").get(prompt_id)

    def recent_history(self, max_items: int = 200) -> dict[str, Any]:
        return self._json("GET", "/history", params={"max_items": max_items})

    def queue(self) -> dict[str, list]:
        return self._json("GET", "/queue")

    def delete_from_queue(self, prompt_ids: list[str]) -> None:
        self._request("POST", "/queue", json={"delete": prompt_ids})

    def interrupt(self, prompt_id: str) -> None:
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    def queue_prompt(self, prompt: dict[str, Any], client_id: str, prompt_id: str,
                     extra_data: dict[str, Any]) -> dict[str, Any]:
        body = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id, "extra_data": extra_data}
        response = self._request("POST", "/prompt", json=body)
        if response.status_code == 400:
            try:
                data = response.json()
            except ValueError:
                data = {}
            raise PromptRejected(data.get("error") or {}, data.get("node_errors") or {})
        if response.status_code >= 400:
            raise ComfyUIError(f"the ComfyUI server refused the prompt (HTTP {response.status_code})",
                               status=response.status_code)
        return response.json()

    # -- files ---------------------------------------------------------------------------------
    def upload(self, name: str, data: bytes, subfolder: str) -> dict[str, Any]:
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return self._json("POST", "/upload/image", files={"image": (name, data, content_type)},
                          data={"subfolder": subfolder, "type": "input", "overwrite": "true"})

    def upload_many(self, files: Iterable[tuple[str, bytes | Path]], subfolder: str, concurrency: int = 8) -> int:
        """Upload (name, bytes or path) pairs concurrently over the keep-alive pool; returns bytes sent."""
        def one(item: tuple[str, bytes | Path]) -> int:
            name, content = item
            data = content.read_bytes() if isinstance(content, Path) else content
            self.upload(name, data, subfolder)
            return len(data)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return sum(pool.map(one, list(files)))

    def download(self, filename: str, subfolder: str, target: Path, kind: str = "output",
                 max_bytes: int = MAX_WEIGHTS_BYTES) -> Path | None:
        """GET /view into `target` (atomically); None when the server has no such file."""
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            with self.http.stream("GET", "/view", params=params) as response:
                if response.status_code == 404:
                    return None
                if response.status_code >= 400:
                    raise ComfyUIError(f"the ComfyUI server answered /view with HTTP {response.status_code}",
                                       retryable=response.status_code >= 500, status=response.status_code)
                written = 0
                with open(partial, "wb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ComfyUIError(f"the LoRA file is larger than {max_bytes // 1024 ** 2} MB; refused")
                        handle.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise ComfyUIError(f"downloading the LoRA failed ({type(exc).__name__})", retryable=True) from None
        except ComfyUIError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return target

    # -- websocket -----------------------------------------------------------------------------
    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", f"clientId={client_id}", ""))

    def open_socket(self, client_id: str) -> ClientConnection:
        try:
            return connect(self.ws_url(client_id), open_timeout=self.timeout, additional_headers=self._headers,
                           max_size=16 * 1024 * 1024)
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise ComfyUIError(f"cannot open the ComfyUI websocket ({type(exc).__name__})", retryable=True) from None


def read_message(socket: ClientConnection, timeout: float) -> dict[str, Any] | None:
    """The next JSON message, None after `timeout` with nothing; binary frames (previews) are skipped.
    Raises ComfyUIError(retryable) when the socket closed."""
    try:
        frame = socket.recv(timeout=timeout)
    except TimeoutError:
        return None
    except (WebSocketException, OSError) as exc:
        raise ComfyUIError(f"the ComfyUI websocket closed ({type(exc).__name__})", retryable=True) from None
    if isinstance(frame, bytes):
        return {"type": "binary"}
    try:
        message = json.loads(frame)
    except ValueError:
        return {"type": "unreadable"}
    return message if isinstance(message, dict) else {"type": "unreadable"}
