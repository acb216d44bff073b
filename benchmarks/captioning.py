"""Auto-captioning throughput at concurrency 1, 4 and 16: the OpenAI-compatible provider against a
loopback server (its own process) that answers each request after 200 ms, through the real actor
(stub broker + an in-process dramatiq worker, as embedded mode runs it), image preparation
(decode, downscale, JPEG) and the database writes (a caption version per image, item and run rows).

    .venv/bin/python benchmarks/captioning.py [--seconds-per-level 4 --latency 0.2]
    DATABASE_URL=postgres://user@127.0.0.1:5432/db SECRET_KEY=x .venv/bin/python benchmarks/captioning.py

Each level captions enough images for about `--seconds-per-level` of ideal time (n = level ×
seconds / latency). Prints ONE JSON object on its last line: images_per_s_c1/_c4/_c16,
scaling_16 (c16 ÷ c1; 16 is perfect) and overhead_ms_per_image: at c1, the median time from one
saved caption to the next (item `finished_at` stamps, so the run's fixed start and finish costs,
reported apart as c1_run_fixed_ms, are left out) minus the median time per request of a bare httpx
loop sending the same requests to the same server in the same run (medians: this machine is shared). That difference is what the portal
adds per image: reading and preparing the image, saving the result and its version, progress.
Also printed: the raw figures and portal_cpu_ms_per_image (CPU time of this process per image).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _inprocess import ROOT, setup_django

SERVER = """
import sys, time
sys.path.insert(0, {root!r})
from tests.fakes.caption_servers import FakeCaptionServer
server = FakeCaptionServer("openai", caption="The image shows a shape of {{width}}x{{height}} pixels", delay={latency})
server.server.request_queue_size = 128
with server:
    print(server.url, flush=True)
    sys.stdin.read()
"""


def draw(i: int, side: int) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), ((i * 37) % 255, (i * 91) % 255, (i * 53) % 255))
    ImageDraw.Draw(img).ellipse([i % 50, i % 70, side - i % 40, side - i % 30], fill=(250, 250 - i % 200, 20))
    ImageDraw.Draw(img).text((4, 4), str(i), fill=(0, 0, 0))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def bare_loop(url: str, image: bytes, count: int) -> float:
    """Median seconds per request of a bare httpx loop sending the same request shape to the same
    server one at a time: the floor the portal's per-image time is compared with."""
    import base64

    import httpx

    body = {"model": "fake-vision-1", "stream": False, "max_tokens": 200, "temperature": 0.2,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Describe it."},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(image).decode()}},
            ]}]}
    with httpx.Client(timeout=30) as client:
        client.post(f"{url}/chat/completions", json=body)  # connect once, as the provider's client does
        durations = []
        for _ in range(count):
            started = time.perf_counter()
            client.post(f"{url}/chat/completions", json=body).raise_for_status()
            durations.append(time.perf_counter() - started)
        return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-level", type=float, default=4.0)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--side", type=int, default=512, help="pixel side of the generated JPEGs")
    parser.add_argument("--c1-images", type=int, default=40, help="images at concurrency 1 (the overhead sample)")
    args = parser.parse_args()

    setup_django("captioning")
    import dramatiq
    from django.contrib.auth import get_user_model

    from datasets_app import caption_runs
    from datasets_app.caption_providers import create_provider
    from datasets_app.ingest import Entry, ingest_entries
    from datasets_app.models import CaptionRun, CaptionRunItem, Dataset, RunStatus
    from datasets_app.services import create_dataset
    from lorasite.accounts.models import Team
    from lorasite.broker import get_broker

    server = subprocess.Popen([sys.executable, "-c", SERVER.format(root=str(ROOT), latency=args.latency)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    broker = get_broker()
    worker = dramatiq.Worker(broker, queues={"captioning"}, worker_threads=1)
    worker.start()
    try:
        url = server.stdout.readline().strip()
        user, _ = get_user_model().objects.get_or_create(username="bench-captioner")
        team, _ = Team.objects.get_or_create(slug="bench-caption", defaults={"name": "Bench captioning"})
        bare = bare_loop(url, draw(1, args.side), args.c1_images)
        results = {}
        for level in (1, 4, 16):
            count = max(level, round(level * args.seconds_per_level / args.latency))
            if level == 1:
                count = args.c1_images
            Dataset.objects.filter(team=team, name=f"c{level}").delete()
            dataset = create_dataset(team, user, f"c{level}", trigger_word="shp")
            entries = []
            for i in range(count):
                data = draw(i + 1000 * level, args.side)
                entries.append(Entry(name=f"img{i:04d}.jpg", path=f"img{i:04d}.jpg", read=lambda data=data: data))
            ingest_entries(dataset, entries, user=user)
            name = f"vision-c{level}-{time.time_ns()}"
            # An operator (global) provider: a loopback URL is refused for team providers in production.
            create_provider(None, name=name, type="openai", base_url=url, model="fake-vision-1", concurrency=level,
                            timeout_seconds=30)
            started, cpu_started = time.perf_counter(), time.process_time()
            run = caption_runs.start_run(dataset, user, name, None, "uncaptioned", [])  # sends on commit
            broker.join("captioning", fail_fast=True, timeout=600_000)
            worker.join()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            run = CaptionRun.objects.get(pk=run.pk)
            if run.status != RunStatus.COMPLETED or run.done != count:
                raise SystemExit(f"level {level}: run ended {run.status} with {run.done}/{count} ({run.error})")
            results[level] = (count, elapsed, cpu)
            if level == 1:
                stamps = sorted(CaptionRunItem.objects.filter(run=run).values_list("finished_at", flat=True))
                steady = statistics.median((b - a).total_seconds() for a, b in itertools.pairwise(stamps))
            print(f"c{level}: {count} images in {elapsed:.2f} s, {cpu:.2f} s CPU", file=sys.stderr)
    finally:
        worker.stop()
        server.stdin.close()
        server.wait(10)
    ips = {level: count / elapsed for level, (count, elapsed, _) in results.items()}
    count1, elapsed1, _ = results[1]
    from django.db import connection

    per_image = elapsed1 / count1
    fixed = elapsed1 - steady * count1
    print(json.dumps({
        "images_per_s_c1": round(ips[1], 2), "images_per_s_c4": round(ips[4], 2),
        "images_per_s_c16": round(ips[16], 2), "scaling_16": round(ips[16] / ips[1], 2),
        "overhead_ms_per_image": round((steady - bare) * 1000, 2),
        "c1_steady_ms_per_image": round(steady * 1000, 2),
        "c1_run_fixed_ms": round(fixed * 1000, 1),
        "c1_ms_per_image_all_in": round(per_image * 1000, 2),
        "bare_client_ms_beyond_latency": round((bare - args.latency) * 1000, 2),
        # CPU time of this process (actor, image preparation, HTTP client, database, progress) per
        # image: what the portal costs, whatever else the machine is doing.
        "portal_cpu_ms_per_image": {f"c{k}": round(v[2] / v[0] * 1000, 2) for k, v in results.items()},
        "latency_s": args.latency, "images": {f"c{k}": v[0] for k, v in results.items()},
        "image_side": args.side, "database": connection.vendor, "load_average": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
