"""Dispatch latency: job submit → a real `dramatiq lorasite.worker` process claims it, on the Redis
broker, with the worker idle between submissions as in real life.

    .venv/bin/python benchmarks/dispatch.py [--samples 30 --idle-min 1.0 --idle-max 2.0 --tuned-timeout-ms 50]

Each sample submits a job through `training_app.services.submit_job` (the same transaction the API
runs) and times from the moment that transaction commits (an on_commit hook registered first) to the
job's `started_at`, which `lifecycle.claim` sets inside the worker. Both are `time.time()` /
`timezone.now()` on this machine. The job's dataset image has no file in storage, so the local backend
fails right after the claim without importing torch: only submit → claim is timed.

Two worker runs in the same benchmark: the shipped default (dramatiq's consumer poll back-off capped
at `dramatiq_worker_timeout` = 1000 ms) and a tuned worker (`dramatiq_worker_timeout` = --tuned-timeout-ms).
Needs Postgres (127.0.0.1:5432, a role that may CREATE DATABASE) and Redis (127.0.0.1:6379); makes its
own throwaway database and Redis namespace. Prints ONE JSON object on its last line:
{"dispatch_median_ms", "dispatch_p99_ms", "tuned_dispatch_median_ms", "tuned_dispatch_p99_ms", ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import Stack, bin_path, percentile

BASE_MODEL = "bench-sd15"
CONFIG = {"resolution": 512, "max_steps": 10, "rank": 4}
GOAL_MEDIAN_MS = 50.0


def make_fixtures():
    """A team with a member, and a dataset whose one image has a database row but no file."""
    from django.contrib.auth import get_user_model

    from datasets_app.models import Dataset, DatasetImage, StoredBlob
    from lorasite.accounts.models import Membership, Role, Team
    from training_app.models import BaseModel

    team = Team.objects.create(slug="bench", name="Bench", max_concurrent_jobs=2)
    user = get_user_model().objects.create_user("bench", password=None)
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    BaseModel.objects.create(name=BASE_MODEL, family="sd15", location="missing/bench-sd15")
    dataset = Dataset.objects.create(team=team, name="bench")
    blob = StoredBlob.objects.create(sha256="0" * 64, file="blobs/00/missing.jpg", format="JPEG",
                                     size_bytes=1)
    DatasetImage.objects.create(dataset=dataset, blob=blob, sha256=blob.sha256, width=512, height=512,
                                format="JPEG", size_bytes=1, caption="bench")
    return user, dataset


def submit_and_time(user, dataset, index: int, timeout: float = 30.0) -> dict[str, float]:
    """Submit one job, wait until a worker claimed it and ran it to its end; return timings in ms."""
    from django.db import transaction

    from training_app.models import FINISHED_STATUSES, TrainingJob
    from training_app.services import submit_job

    marks: dict[str, float] = {}
    with transaction.atomic():
        # Registered first, so it runs first after COMMIT, before the hooks that send the message.
        transaction.on_commit(lambda: marks.setdefault("commit", time.time()))
        job = submit_job(user, dataset_id=dataset.uuid, base_model=BASE_MODEL, config=CONFIG,
                         name=f"bench-{index}")
    rows = TrainingJob.objects.filter(pk=job.pk)
    deadline = time.monotonic() + timeout
    while True:
        row = rows.values("status", "started_at", "dispatched_at", "error").get()
        if row["status"] in FINISHED_STATUSES and row["started_at"] is not None:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {index} was not claimed and finished within {timeout}s: {row}")
        time.sleep(0.02)
    return {
        "dispatch_ms": (row["started_at"].timestamp() - marks["commit"]) * 1000,
        "submit_side_ms": (row["dispatched_at"].timestamp() - marks["commit"]) * 1000,
    }


def run_worker(stack: Stack, label: str, user, dataset, samples: int, idle: tuple[float, float],
               rng: random.Random, **worker_env: str) -> list[dict[str, float]]:
    """Start one worker (the README's GPU worker command), warm it up, then time `samples` submissions."""
    args = [bin_path("dramatiq"), "lorasite.worker", "--queues", "gpu", "--processes", "1", "--threads", "1"]
    worker = stack.start(f"worker-{label}", args, **worker_env)
    try:
        # Warm-up, not counted: waits for the worker to boot and loads the actor's lazy imports.
        submit_and_time(user, dataset, -1, timeout=90)
        results = []
        for i in range(samples):
            time.sleep(rng.uniform(*idle))
            results.append(submit_and_time(user, dataset, i))
        failed = [e for e in _errors() if "missing from storage" not in e]
        if failed:
            raise RuntimeError(f"jobs failed for another reason than the missing image: {failed[:2]}")
        return results
    except BaseException:
        print(stack.log_tail(f"worker-{label}"), file=sys.stderr)
        raise
    finally:
        stack.stop(worker)


def _errors() -> list[str]:
    from training_app.models import TrainingJob

    return list(TrainingJob.objects.values_list("error", flat=True).distinct())


def summarize(results: list[dict[str, float]], key: str = "dispatch_ms") -> dict[str, float]:
    values = [r[key] for r in results]
    return {"median": round(statistics.median(values), 1), "p99": round(percentile(values, 99), 1),
            "min": round(min(values), 1), "max": round(max(values), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30, help="timed submissions per worker configuration")
    parser.add_argument("--idle-min", type=float, default=1.0, help="idle s before a submission, at least")
    parser.add_argument("--idle-max", type=float, default=2.0, help="idle s before a submission, at most")
    parser.add_argument("--tuned-timeout-ms", type=int, default=50,
                        help="dramatiq_worker_timeout for the tuned worker; 0 skips the tuned run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 0 < args.idle_min <= args.idle_max:
        parser.error("need 0 < --idle-min <= --idle-max")
    rng = random.Random(args.seed)
    started = time.monotonic()

    with Stack("dispatch") as stack:
        stack.setup_django()
        user, dataset = make_fixtures()
        idle = (args.idle_min, args.idle_max)
        default = run_worker(stack, "default", user, dataset, args.samples, idle, rng)
        tuned = []
        if args.tuned_timeout_ms:
            tuned = run_worker(stack, "tuned", user, dataset, args.samples, idle, rng,
                               dramatiq_worker_timeout=str(args.tuned_timeout_ms))

    d, s = summarize(default), summarize(default, "submit_side_ms")
    result = {
        "dispatch_median_ms": d["median"],
        "dispatch_p99_ms": d["p99"],
        "dispatch_min_ms": d["min"],
        "dispatch_max_ms": d["max"],
        "submit_side_median_ms": s["median"],
        "worker_timeout_ms": 1000,
        "samples": args.samples,
        "idle_between_s": [args.idle_min, args.idle_max],
        "goal_median_ms": GOAL_MEDIAN_MS,
    }
    if tuned:
        t = summarize(tuned)
        result.update({
            "tuned_worker_timeout_ms": args.tuned_timeout_ms,
            "tuned_dispatch_median_ms": t["median"],
            "tuned_dispatch_p99_ms": t["p99"],
            "tuned_dispatch_max_ms": t["max"],
            "tuned_submit_side_median_ms": summarize(tuned, "submit_side_ms")["median"],
        })
    result["duration_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
