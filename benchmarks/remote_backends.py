"""Remote backend figures against the loopback fakes (tests/fakes/comfyui_server.py, replicate_server.py).

    .venv/bin/python benchmarks/remote_backends.py [--images 500 --steps 200 --step-ms 50 --poll-samples 400]

1. Progress delay: a ComfyUI job runs on the production stack (daphne + a `dramatiq` worker on the
   `remote` queue, Postgres, Redis); the fake records `time.time()` as it sends each `progress`
   message, and a client on the portal's job websocket records when the matching step arrives
   (the reporter throttles to 10 messages a second, so about every other step is matched).
2. Upload: a 500-image dataset (256² JPEGs + .txt captions, 1,000 requests) sent by the backend's
   client (`ComfyUIClient.upload_many`: concurrent, keep-alive) against a bare httpx client doing
   the same multipart requests from as many threads on one keep-alive pool; five rounds interleaved,
   the ratio is the median of the per-round ratios (min and max printed). A one-after-another bare
   loop is printed too, for scale.
3. Replicate poll overhead: what our client adds to one `GET /v1/trainings/{id}` of a finished
   1000-step training over a bare httpx GET of the same URL (benchmarks/replicate_poll.py, whose
   docstring says how).

Needs Postgres and Redis like the other stack benchmarks. Prints ONE JSON object on its last line:
{"comfyui_progress_p50_ms", "comfyui_progress_p99_ms", "upload_mb_per_s", "upload_ratio_vs_raw_httpx",
 "replicate_poll_overhead_ms", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from _stack import Stack, bin_path, free_port, percentile  # noqa: E402
from replicate_poll import measure_poll_overhead  # noqa: E402

from tests.fakes.comfyui_server import Behaviour, FakeComfyUI  # noqa: E402


def jpeg(index: int, size: int = 256) -> bytes:
    from PIL import Image

    rng = random.Random(index)
    image = Image.frombytes("RGB", (size, size), bytes(rng.getrandbits(8) for _ in range(size * size * 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def upload_figures(count: int, rounds: int = 5, concurrency: int = 8) -> dict:
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from training_app.backends.comfyui_api import ComfyUIClient

    files: list[tuple[str, bytes]] = []
    for i in range(count):
        files.append((f"{i:05d}.jpg", jpeg(i)))
        files.append((f"{i:05d}.txt", f"tok, photo number {i}".encode()))
    total_mb = sum(len(data) for _, data in files) / 1024 ** 2
    ours, raw, sequential = [], [], []

    def bare(client: httpx.Client, subfolder: str, item: tuple[str, bytes]) -> None:
        name, data = item
        response = client.post("/upload/image", files={"image": (name, data, "application/octet-stream")},
                               data={"subfolder": subfolder, "type": "input", "overwrite": "true"})
        response.raise_for_status()

    with FakeComfyUI() as server:
        # A/B interleaved: our client, then a bare httpx client doing the same requests from the same
        # number of threads on one keep-alive pool (the fair baseline), then one after another.
        for attempt in range(rounds):
            start = time.perf_counter()
            with ComfyUIClient(server.url, timeout=30) as client:
                client.upload_many(files, f"ours{attempt}", concurrency=concurrency)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            with httpx.Client(base_url=server.url, timeout=30, limits=limits) as client, \
                    ThreadPoolExecutor(max_workers=concurrency) as pool:
                list(pool.map(lambda item, sub=f"raw{attempt}", c=client: bare(c, sub, item), files))
            raw.append(time.perf_counter() - start)
            if attempt < 2:
                start = time.perf_counter()
                with httpx.Client(base_url=server.url, timeout=30) as client:
                    for item in files:
                        bare(client, f"seq{attempt}", item)
                sequential.append(time.perf_counter() - start)
    ratios = sorted(r / o for r, o in zip(raw, ours, strict=True))
    return {"upload_mb_per_s": round(total_mb / statistics.median(ours), 1),
            "raw_httpx_mb_per_s": round(total_mb / statistics.median(raw), 1),
            "upload_ratio_vs_raw_httpx": round(statistics.median(ratios), 2),
            "upload_ratio_min": round(ratios[0], 2), "upload_ratio_max": round(ratios[-1], 2),
            "sequential_httpx_mb_per_s": round(total_mb / min(sequential), 1), "upload_rounds": rounds,
            "upload_mb": round(total_mb, 1), "upload_requests": len(files), "upload_concurrency": concurrency}


def make_fixtures(server_url: str, models_dir: Path):
    from django.contrib.auth import get_user_model

    from datasets_app.ingest import Entry, ingest_entries
    from datasets_app.services import create_dataset
    from lorasite.accounts.models import ApiToken, Membership, Role, Team
    from training_app import backend_configs
    from training_app.models import BaseModel, Family
    from training_app.trainer import build_tiny_model

    user = get_user_model().objects.create_user("bench", password="bench-pass-123")
    team = Team.objects.create(slug="bench", name="Bench", max_concurrent_jobs=4)
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    location = build_tiny_model(models_dir / "tiny-sd15", family="sd15")
    BaseModel.objects.create(name="tiny-sd15", family=Family.SD15, location=str(location))
    backend_configs.save(team, {"name": "bench-comfy", "type": "comfyui", "base_url": server_url,
                                "options": {"checkpoints": {"tiny-sd15": "v1-5-pruned-emaonly.safetensors"}}})
    dataset = create_dataset(team, user, "bench", trigger_word="tok")
    entries = []
    for i in range(4):
        data = jpeg(i, 64)
        entries.append(Entry(name=f"{i}.jpg", path=f"{i}.jpg", read=lambda data=data: data))
    ingest_entries(dataset, entries, user=user)
    return ApiToken.issue(user, "bench")[1], dataset, location


async def watch_progress(port: int, token: str, job_id: str, timeout: float) -> list[tuple[int, float]]:
    import websockets

    arrivals = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/jobs/{job_id}/",
                                  additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "progress":
                    arrivals.append((message["step"], time.time()))
                if message["type"] == "status" and message["status"] in ("completed", "failed", "cancelled"):
                    return arrivals


def progress_figures(steps: int, step_ms: float) -> dict:
    with Stack("remote") as stack:
        stack.setup_django()
        import httpx

        server = FakeComfyUI(behaviour=Behaviour(step_seconds=step_ms / 1000))
        server.start()
        stack.callback(server.stop)
        token, dataset, location = make_fixtures(server.url, Path(stack.env["LORASITE_MODELS_DIR"]))
        server.unet_dir = location / "unet"
        port = free_port()
        daphne = stack.start("daphne", [bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port),
                                        "lorasite.asgi:application"])
        stack.start("worker", [bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                               "--queues", "remote", "default"], dramatiq_worker_timeout="50")
        stack.wait_for_port(port, daphne, "daphne")
        response = httpx.post(f"http://127.0.0.1:{port}/api/jobs", headers={"Authorization": f"Bearer {token}"},
                              json={"dataset_id": str(dataset.uuid), "base_model": "tiny-sd15", "backend": "bench-comfy",
                                    "config": {"resolution": 64, "max_steps": steps, "rank": 4, "batch_size": 1}},
                              timeout=30)
        response.raise_for_status()
        job = response.json()
        arrivals = asyncio.run(watch_progress(port, token, job["id"], timeout=120 + steps * step_ms / 1000 * 3))
        sent = {int(key.rsplit(":", 1)[1]): at for key, at in server.event_times}
        # Only the first arrival of a step counts: the final step is sent again with the job's end
        # (after the LoRA is downloaded and stored), which is not a progress delay.
        first: dict[int, float] = {}
        for step, at in arrivals:
            first.setdefault(step, at)
        delays = [(at - sent[step]) * 1000 for step, at in first.items() if step in sent and at >= sent[step]]
        if not delays:
            raise RuntimeError(f"no progress matched; worker log:\n{stack.log_tail('worker')}")
        return {"comfyui_progress_p50_ms": round(percentile(delays, 50), 1),
                "comfyui_progress_p99_ms": round(percentile(delays, 99), 1), "progress_samples": len(delays),
                "steps": steps, "step_ms": step_ms}


def main() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=50.0)
    parser.add_argument("--poll-samples", type=int, default=400)
    args = parser.parse_args()
    result = progress_figures(args.steps, args.step_ms)
    result.update(upload_figures(args.images))
    poll = measure_poll_overhead(args.poll_samples)
    result.update({"replicate_poll_overhead_ms": poll["replicate_poll_overhead_ms"],
                   "replicate_poll_ms_p50": poll["replicate_poll_ms_p50"],
                   "replicate_bare_get_ms_p50": poll["bare_httpx_get_ms_p50"],
                   "replicate_poll_with_progress_overhead_ms": poll["poll_with_progress_overhead_ms"]})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
