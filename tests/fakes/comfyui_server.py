"""A loopback ComfyUI server for tests and benchmarks: HTTP and websocket on one port (aiohttp), with
the routes, message shapes and quirks of ComfyUI's server.py and its native training nodes.

It does not train: a prompt "runs" by stepping a clock, and on success writes a real safetensors LoRA
in ComfyUI's own key layout (`diffusion_model.<ldm module>.lora_up.weight`, `.lora_down.weight`,
`.alpha`, plus `.diff_b` bias deltas) shaped from a diffusers UNet folder, so what comes back loads
in diffusers once converted. Failure modes are switched per test through `FakeComfyUI.behaviour`.

Run in-process (`with FakeComfyUI(...) as server:`) or as a subprocess
(`python -m tests.fakes.comfyui_server --port N --unet DIR [--generation new]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

from tests.fakes.comfyui_nodes import (
    DEFAULT_SHAPES,
    attention_shapes,
    node_definitions,
    validate_graph,
    write_comfyui_lora,
)


@dataclass
class Behaviour:
    """Switches a test flips; read at the moment they matter."""

    generation: str = "old"  # "old": TrainLoraNode + LoadImageTextSetFromFolderNode + SaveLoRANode; "new": V3 nodes
    per_step_progress: bool = True  # False: like ComfyUI <= 0.3.64, only executing/progress_state
    step_seconds: float = 0.02
    fail_at_step: int | None = None  # execution_error at this step
    drop_socket_at_step: int | None = None  # close every socket at this step (the run goes on)
    http_500: set[str] = field(default_factory=set)  # route names answering 500, e.g. {"prompt"}
    checkpoints: tuple[str, ...] = ("v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors")
    honour_interrupt: bool = True
    hold: bool = False  # a prompt stays pending until released (tests of queue deletion)
    train_limits: dict[str, dict] = field(default_factory=dict)  # e.g. {"rank": {"max": 4}}: a fork's tighter ranges


class FakeComfyUI:
    def __init__(self, unet_dir: Path | None = None, port: int = 0, behaviour: Behaviour | None = None,
                 root: Path | None = None):
        import tempfile

        self.unet_dir = Path(unet_dir) if unet_dir else None
        self.behaviour = behaviour or Behaviour()
        self.root = Path(root or tempfile.mkdtemp(prefix="fake-comfyui-"))
        (self.root / "input").mkdir(parents=True, exist_ok=True)
        (self.root / "output").mkdir(parents=True, exist_ok=True)
        self.port = port
        self.history: dict[str, dict] = {}
        self.pending: list[list] = []  # [number, prompt_id, graph, extra_data, outputs]
        self.running: list | None = None
        self.prompts_received: list[dict] = []  # every accepted POST /prompt body
        self.uploads = 0
        self.interrupted: set[str] = set()
        self.event_times: list[tuple[str, float]] = []  # (prompt_id:step, time.time()) of progress sent
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}
        self._number = 0
        self._client_of: dict[str, str | None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._wake: asyncio.Event | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeComfyUI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fake-comfyui", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake ComfyUI did not start")

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def release(self) -> None:
        """Let held prompts run."""
        self.behaviour.hold = False
        if self._loop and self._wake:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._startup())
        ready.set()
        self._loop.run_forever()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        routes = [("GET", "/system_stats", self.system_stats), ("GET", "/object_info", self.object_info),
                  ("GET", "/object_info/{node}", self.object_info), ("POST", "/upload/image", self.upload),
                  ("POST", "/prompt", self.post_prompt), ("GET", "/prompt", self.get_prompt),
                  ("GET", "/history", self.get_history), ("GET", "/history/{prompt_id}", self.get_history),
                  ("GET", "/queue", self.get_queue), ("POST", "/queue", self.post_queue),
                  ("POST", "/interrupt", self.interrupt), ("GET", "/view", self.view), ("GET", "/ws", self.ws)]
        for method, path, handler in routes:
            # Every route is also served under /api, as ComfyUI does.
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._wake = asyncio.Event()
        self._worker = asyncio.ensure_future(self._execute_loop())

    async def _shutdown(self) -> None:
        self._worker.cancel()
        for sockets in self._sockets.values():
            for socket in list(sockets):
                await socket.close()
        await self._runner.cleanup()

    def _fail(self, route: str) -> web.Response | None:
        if route in self.behaviour.http_500:
            return web.Response(status=500, text="500 Internal Server Error")
        return None

    # -- routes --------------------------------------------------------------------------------
    async def system_stats(self, request: web.Request) -> web.Response:
        if failed := self._fail("system_stats"):
            return failed
        return web.json_response({
            "system": {"os": "posix", "ram_total": 64 * 2 ** 30, "ram_free": 48 * 2 ** 30, "comfyui_version": "0.3.64"
                       if self.behaviour.generation == "old" else "0.3.75", "required_frontend_version": "1.27.10",
                       "python_version": "3.11.7", "pytorch_version": "2.8.0+cu128", "embedded_python": False,
                       "argv": ["main.py", "--listen", "127.0.0.1"]},
            "devices": [{"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": 0,
                         "vram_total": 24 * 2 ** 30, "vram_free": 21 * 2 ** 30, "torch_vram_total": 0,
                         "torch_vram_free": 0}]})

    async def object_info(self, request: web.Request) -> web.Response:
        if failed := self._fail("object_info"):
            return failed
        info = self._definitions()
        node = request.match_info.get("node")
        return web.json_response({node: info[node]} if node in info else ({} if node else info))

    def _definitions(self) -> dict:
        info = node_definitions(self.behaviour.generation, self.behaviour.checkpoints, self._input_folders())
        for name, limits in self.behaviour.train_limits.items():
            info["TrainLoraNode"]["input"]["required"][name][1].update(limits)
        return info

    def _input_folders(self) -> list[str]:
        return sorted(p.name for p in (self.root / "input").iterdir() if p.is_dir())

    async def upload(self, request: web.Request) -> web.Response:
        if failed := self._fail("upload"):
            return failed
        form = await request.post()
        image = form.get("image")
        if image is None or not hasattr(image, "file"):
            return web.Response(status=400)
        subfolder = str(form.get("subfolder") or "")
        target_dir = (self.root / "input" / subfolder).resolve()
        if (self.root / "input").resolve() not in (target_dir, *target_dir.parents):
            return web.Response(status=403)
        target_dir.mkdir(parents=True, exist_ok=True)
        name = Path(image.filename).name
        target = target_dir / name
        if target.exists() and str(form.get("overwrite")) not in ("true", "1"):
            # ComfyUI keeps both: `x (1).png`, which breaks image/caption pairing.
            stem, suffix, n = target.stem, target.suffix, 1
            while (target_dir / f"{stem} ({n}){suffix}").exists():
                n += 1
            name = f"{stem} ({n}){suffix}"
            target = target_dir / name
        target.write_bytes(image.file.read())
        self.uploads += 1
        return web.json_response({"name": name, "subfolder": subfolder, "type": "input"})

    async def post_prompt(self, request: web.Request) -> web.Response:
        if failed := self._fail("prompt"):
            return failed
        body = await request.json()
        graph = body.get("prompt")
        if not isinstance(graph, dict) or not graph:
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "",
                                                "extra_info": {}}, "node_errors": {}}, status=400)
        error, node_errors = validate_graph(graph, self._definitions())
        if error:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        self._number += 1
        outputs = [nid for nid, n in graph.items() if n["class_type"] in ("SaveLoRA", "SaveLoRANode")]
        self.pending.append([self._number, prompt_id, graph, body.get("extra_data") or {}, outputs])
        self.prompts_received.append(body)
        self._client_of[prompt_id] = body.get("client_id")
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": self._number, "node_errors": {}})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": len(self.pending) + bool(self.running)}})

    async def get_history(self, request: web.Request) -> web.Response:
        if failed := self._fail("history"):
            return failed
        prompt_id = request.match_info.get("prompt_id")
        if prompt_id:
            return web.json_response({prompt_id: self.history[prompt_id]} if prompt_id in self.history else {})
        limit = int(request.query.get("max_items", "10000"))
        items = list(self.history.items())[-limit:]
        return web.json_response(dict(items))

    async def get_queue(self, request: web.Request) -> web.Response:
        if failed := self._fail("queue"):
            return failed
        return web.json_response({"queue_running": [self.running] if self.running else [],
                                  "queue_pending": self.pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.pending.clear()
        for prompt_id in body.get("delete") or []:
            self.pending = [item for item in self.pending if item[1] != prompt_id]
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        target = (body or {}).get("prompt_id")
        if self.running and (target is None or target == self.running[1]):
            self.interrupted.add(self.running[1])
        return web.Response(status=200)

    async def view(self, request: web.Request) -> web.StreamResponse:
        filename, subfolder = request.query.get("filename", ""), request.query.get("subfolder", "")
        kind = request.query.get("type", "output")
        if not filename or ".." in filename or filename.startswith("/"):
            return web.Response(status=400)
        base = (self.root / kind).resolve()
        folder = (base / subfolder).resolve()
        if base not in (folder, *folder.parents):
            return web.Response(status=403)
        path = folder / filename
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{filename}"',
                                               "Content-Type": "application/octet-stream"})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await socket.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        self._sockets.setdefault(client_id, set()).add(socket)
        queue_remaining = len(self.pending) + bool(self.running)
        await socket.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": queue_remaining}},
                                                           "sid": client_id}})
        try:
            async for message in socket:
                if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            self._sockets.get(client_id, set()).discard(socket)
        return socket

    # -- execution -----------------------------------------------------------------------------
    async def _send(self, client_id: str | None, kind: str, data: dict, broadcast: bool = False) -> None:
        if client_id is None and not broadcast:
            return  # ComfyUI drops these without a client_id
        targets = [s for sockets in self._sockets.values() for s in sockets] if client_id is None \
            else list(self._sockets.get(client_id, ()))
        for socket in targets:
            try:
                await socket.send_json({"type": kind, "data": data})
            except (ConnectionError, RuntimeError):
                pass

    async def _drop_sockets(self) -> None:
        for sockets in list(self._sockets.values()):
            for socket in list(sockets):
                await socket.close()

    async def _execute_loop(self) -> None:
        while True:
            while not self.pending or self.behaviour.hold:
                self._wake.clear()
                await self._wake.wait()
            self.running = self.pending.pop(0)
            try:
                await self._execute(self.running)
            finally:
                self.running = None

    async def _execute(self, item: list) -> None:
        _number, prompt_id, graph, _extra_data, _outputs = item
        client = self._client_of.get(prompt_id)
        b = self.behaviour
        messages: list[list] = []
        now_ms = lambda: int(time.time() * 1000)  # noqa: E731
        messages.append(["execution_start", {"prompt_id": prompt_id, "timestamp": now_ms()}])
        await self._send(client, "execution_start", messages[-1][1])
        train_id = next(nid for nid, n in graph.items() if n["class_type"] == "TrainLoraNode")
        train = graph[train_id]["inputs"]
        steps, grad = int(train["steps"]), int(train.get("grad_accumulation_steps", 1))
        for nid in graph:
            if nid == train_id:
                break
            await self._send(client, "executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id})
        await self._send(client, "executing", {"node": train_id, "display_node": train_id, "prompt_id": prompt_id})
        await self._send(client, "progress_state", {"prompt_id": prompt_id, "nodes": {train_id: {
            "value": 0, "max": steps * grad, "state": "running", "node_id": train_id, "prompt_id": prompt_id,
            "display_node_id": train_id, "parent_node_id": None, "real_node_id": train_id}}}, broadcast=True)
        for step in range(1, steps + 1):
            await asyncio.sleep(b.step_seconds)
            if prompt_id in self.interrupted and b.honour_interrupt:
                data = {"prompt_id": prompt_id, "node_id": train_id, "node_type": "TrainLoraNode",
                        "executed": list(graph)[:3], "timestamp": now_ms()}
                messages.append(["execution_interrupted", data])
                await self._send(None, "execution_interrupted", data, broadcast=True)
                return self._finish(prompt_id, item, "error", False, messages)
            if b.fail_at_step == step:
                data = {"prompt_id": prompt_id, "node_id": train_id, "node_type": "TrainLoraNode",
                        "executed": list(graph)[:3], "exception_message": "CUDA out of memory. Tried to allocate "
                        "2.00 GiB", "exception_type": "torch.OutOfMemoryError", "traceback": ["..."],
                        "current_inputs": {}, "current_outputs": [], "timestamp": now_ms()}
                messages.append(["execution_error", data])
                await self._send(client, "execution_error", data)
                return self._finish(prompt_id, item, "error", False, messages)
            if b.drop_socket_at_step == step:
                await self._drop_sockets()
            if b.per_step_progress:
                # ProgressBar(steps * grad_acc), updated once per optimizer step (nodes_train.py).
                self.event_times.append((f"{prompt_id}:{step}", time.time()))
                await self._send(client, "progress", {"value": step, "max": steps * grad, "prompt_id": prompt_id,
                                                      "node": train_id}, broadcast=True)
        for node in graph.values():
            if node["class_type"] in ("SaveLoRA", "SaveLoRANode"):
                self._save_lora(node["inputs"]["prefix"], steps if "steps" in node["inputs"] else None,
                                int(train.get("rank", 8)))
        await self._send(client, "executing", {"node": None, "prompt_id": prompt_id})
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": now_ms()}])
        await self._send(client, "execution_success", messages[-1][1])
        self._finish(prompt_id, item, "success", True, messages)

    def _finish(self, prompt_id: str, item: list, status: str, completed: bool, messages: list) -> None:
        # History is only written when a prompt is done (task_done), as in ComfyUI.
        self.history[prompt_id] = {"prompt": item, "outputs": {}, "status": {
            "status_str": status, "completed": completed, "messages": messages}, "meta": {}}

    def _save_lora(self, prefix: str, steps: int | None, rank: int) -> Path:
        folder, _, name = prefix.rpartition("/")
        target_dir = self.root / "output" / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        counter = 1
        while True:
            stem = f"{name}_{steps}_steps_{counter:05}_" if steps is not None else f"{name}_{counter:05}_"
            path = target_dir / f"{stem}.safetensors"
            if not path.exists():
                break
            counter += 1
        write_comfyui_lora(path, attention_shapes(self.unet_dir) if self.unet_dir else DEFAULT_SHAPES, rank)
        return path



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--unet", type=Path, default=None, help="a diffusers UNet folder to shape LoRAs from")
    parser.add_argument("--generation", default="old", choices=["old", "new"])
    parser.add_argument("--step-seconds", type=float, default=0.02)
    args = parser.parse_args()
    server = FakeComfyUI(args.unet, port=args.port, behaviour=Behaviour(generation=args.generation,
                                                                        step_seconds=args.step_seconds))
    server.start()
    print(json.dumps({"url": server.url}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
