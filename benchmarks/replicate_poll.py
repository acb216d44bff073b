"""What our Replicate client adds to each poll of a training, against a bare httpx GET of the same URL.

    .venv/bin/python benchmarks/replicate_poll.py [--samples 400 --steps 1000]

Starts the loopback Replicate fake (tests/fakes) in a subprocess (so its threads do not share this
interpreter's GIL), runs one Flux training of `--steps` steps to the end (its `logs` then hold one tqdm
line per step, ~120 bytes each, as a finished 1000-step training's do), then times, interleaved sample
by sample in a shuffled order, on one keep-alive connection each:

- bare: `httpx.Client.get(url)` reading the body, nothing else;
- poll: `ReplicateClient.get_training(id)` (request, status check, JSON, the Training object);
- poll + progress: that plus `parse_progress` over the whole log (a first poll, the worst case).

`replicate_poll_overhead_ms` is median(poll) - median(bare): the cost of our client per poll.
Both sides talk to the same in-process server, so the server's own time cancels out. Prints ONE JSON
object on its last line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.fakes.replicate_trainers import FLUX_TRAINER  # noqa: E402
from training_app.backends.replicate_api import ReplicateClient  # noqa: E402
from training_app.backends.replicate_inputs import parse_progress  # noqa: E402


@contextmanager
def fake_server():
    """The fake in its own process; yields what it printed (base_url, token, ...)."""
    process = subprocess.Popen([sys.executable, "-m", "tests.fakes.replicate_server"], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def _finished_training(client: ReplicateClient, steps: int) -> str:
    upload = client.upload_dataset(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: the fake only needs a zip
    client.ensure_model("acme", "bench-lora")
    training = client.create_training(FLUX_TRAINER.ref, "acme/bench-lora",
                                      {"input_images": upload.url, "steps": steps})
    deadline = time.monotonic() + 120
    while not training.done and time.monotonic() < deadline:
        time.sleep(0.2)
        training = client.get_training(training.id)
    return training.id


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def measure_poll_overhead(samples: int = 400, steps: int = 1000) -> dict[str, float | int]:
    """Median milliseconds per poll for bare httpx and for our client; the difference is the overhead."""
    with fake_server() as fake, ReplicateClient(fake["base_url"], fake["token"]) as client, \
            httpx.Client(base_url=fake["base_url"], headers={"Authorization": f"Bearer {fake['token']}"}) as bare:
        training_id = _finished_training(client, steps)
        path = f"/v1/trainings/{training_id}"
        log_bytes = len(bare.get(path).content)
        for _ in range(20):  # warm both connections and caches
            bare.get(path).read()
            client.get_training(training_id)
        timings: dict[str, list[float]] = {"bare": [], "poll": [], "progress": []}
        calls = {
            "bare": lambda: bare.get(path).read(),
            "poll": lambda: client.get_training(training_id),
            "progress": lambda: parse_progress(client.get_training(training_id).logs, steps, 0, final=True),
        }
        order = list(calls)
        for _ in range(samples):
            random.shuffle(order)
            for name in order:
                start = time.perf_counter()
                calls[name]()
                timings[name].append(_ms(start))
    bare_ms, poll_ms, progress_ms = timings["bare"], timings["poll"], timings["progress"]
    bare_median, poll_median = statistics.median(bare_ms), statistics.median(poll_ms)
    return {
        "replicate_poll_overhead_ms": round(poll_median - bare_median, 3),
        "replicate_poll_ms_p50": round(poll_median, 3),
        "bare_httpx_get_ms_p50": round(bare_median, 3),
        "poll_with_progress_overhead_ms": round(statistics.median(progress_ms) - bare_median, 3),
        "response_bytes": log_bytes,
        "steps_in_log": steps,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(measure_poll_overhead(args.samples, args.steps)))


if __name__ == "__main__":
    main()
