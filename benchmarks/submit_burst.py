"""Submit bursts: N concurrent `POST /api/jobs` against daphne + Postgres + Redis + a real worker
running tiny jobs, for one team and for ten teams; every job must be created once, sent once, and
finish.

    .venv/bin/python benchmarks/submit_burst.py [--quick] [--threads 2] [--replays 5]

Four scenarios, each with fresh teams (the default limit of 2 running jobs a team; the rest queue):
one_team_20, one_team_100, ten_teams_20, ten_teams_100 (--quick: the two with N = 20). Each submit
carries its own Idempotency-Key; after the burst, --replays of them are sent again with the same key
and must answer 200 with the first job. Jobs train the generated tiny SD-1.5 model (64 px, batch 2,
2 steps, one torch thread per worker thread) on the 12-image demo dataset, in one
`dramatiq` worker process (--threads threads). Messages are counted by a middleware in daphne and the
worker (benchmarks/_enqueue_probe.py) as the broker accepts them.

Needs Postgres (a role that may CREATE DATABASE) and Redis on 127.0.0.1; makes its own throwaway
database and Redis namespace, and stops everything it started, whatever happens. Prints a line per
scenario, then ONE JSON object on its last line: {"submits", "status_5xx", "jobs_created",
"jobs_completed", "duplicates", "messages_sent", "submit_p50_ms", "submit_p99_ms",
"queued_to_running_p50_ms", "scenarios": {name: the same keys}}. Counts are summed over scenarios;
the latency percentiles are over every submit (every job) of every scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import ROOT, Stack, bin_path, free_port, percentile

SCENARIOS = {"one_team_20": (1, 20), "one_team_100": (1, 100), "ten_teams_20": (10, 20),
             "ten_teams_100": (10, 100)}
QUICK = ("one_team_20", "ten_teams_20")
BASE_MODEL = "tiny-sd15"
CONFIG = {"resolution": 64, "batch_size": 2, "rank": 4, "max_steps": 2}
KEYS = ("submits", "status_5xx", "jobs_created", "jobs_completed", "duplicates", "messages_sent",
        "submit_p50_ms", "submit_p99_ms", "queued_to_running_p50_ms")


@dataclass
class Submit:
    """One POST: which team and key, what came back, how long it took."""
    team: int
    key: str
    status: int = 0  # 0: no HTTP answer (connection error or client timeout)
    job_id: str | None = None
    ms: float = 0.0
    error: str = ""


@dataclass
class Outcome:
    name: str
    submits: list[Submit]
    replays: list[Submit]
    jobs: list[dict]
    messages: list[dict]
    timed_out: bool


# -- fixtures: the project's own demo seeders, once per team ----------------------------------------
def make_teams(prefix: str, count: int) -> list[tuple[str, str]]:
    """`count` fresh teams, each with a member, an API token and the demo dataset: (token, dataset uuid)."""
    from datasets_app import demo as dataset_demo
    from datasets_app.models import Dataset
    from lorasite.accounts.models import ApiToken, Role
    from lorasite.accounts.services import create_team, set_membership

    teams = []
    for index in range(count):
        team, _ = create_team(f"{prefix}-{index}", f"{prefix}-owner-{index}")
        member = set_membership(team, f"{prefix}-member-{index}", Role.MEMBER, create_user=True).user
        dataset_demo.seed_demo(team, member, io.StringIO())
        dataset = Dataset.objects.get(team=team, name=dataset_demo.NAME)
        teams.append((ApiToken.issue(member, "submit-burst")[1], str(dataset.uuid)))
    return teams


# -- the burst ---------------------------------------------------------------------------------------
async def post_all(base_url: str, teams: list[tuple[str, str]], submits: list[Submit]) -> None:
    """All of `submits` at once, one connection each, released together."""
    import httpx

    limits = httpx.Limits(max_connections=len(submits), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:
        gate = asyncio.Event()

        async def one(submit: Submit) -> None:
            token, dataset = teams[submit.team]
            await gate.wait()
            started = time.perf_counter()
            try:
                response = await client.post("/api/jobs", headers={
                    "Authorization": f"Bearer {token}", "Idempotency-Key": submit.key},
                    json={"dataset_id": dataset, "base_model": BASE_MODEL, "config": CONFIG, "name": submit.key})
                submit.status = response.status_code
                if response.status_code in (200, 201):
                    submit.job_id = response.json()["id"]
                else:
                    submit.error = response.text[:200]
            except Exception as exc:  # counted and shown, never hidden
                submit.error = f"{type(exc).__name__}: {exc}"
            submit.ms = (time.perf_counter() - started) * 1000

        tasks = [asyncio.create_task(one(s)) for s in submits]
        await asyncio.sleep(0.05)  # every task is waiting on the gate
        gate.set()
        await asyncio.gather(*tasks)


def wait_finished(team_slugs: list[str], expected: int, timeout: float) -> bool:
    """Poll the job rows until `expected` jobs of these teams have finished; False on timeout."""
    from training_app.models import FINISHED_STATUSES, TrainingJob

    deadline = time.monotonic() + timeout
    jobs = TrainingJob.objects.filter(team__slug__in=team_slugs)
    while time.monotonic() < deadline:
        total = jobs.count()
        if total >= expected and jobs.filter(status__in=FINISHED_STATUSES).count() == total:
            return True
        time.sleep(0.5)
    return False


def run_scenario(name: str, n_teams: int, n_submits: int, base_url: str, probe, args) -> Outcome:
    from training_app.models import TrainingJob

    teams = make_teams(name.replace("_", "-"), n_teams)
    slugs = [f"{name.replace('_', '-')}-{i}" for i in range(n_teams)]
    submits = [Submit(team=i % n_teams, key=f"{name}-{i}") for i in range(n_submits)]
    first_message = probe.llen()
    asyncio.run(post_all(base_url, teams, submits))
    # A client that retries: the same keys again, while their jobs are still queued or running.
    replays = [Submit(team=s.team, key=s.key) for s in submits[:args.replays]]
    asyncio.run(post_all(base_url, teams, replays))
    answered = {s.job_id for s in submits + replays if s.job_id}
    timed_out = not wait_finished(slugs, len(answered), args.timeout_per_job * n_submits + 60)
    time.sleep(args.settle)  # what a last transition sends goes out just after its commit
    messages = probe.read(first_message)
    jobs = list(TrainingJob.objects.filter(team__slug__in=slugs).values(
        "status", "error", "queued_at", "started_at", "attempts"))
    return Outcome(name, submits, replays, jobs, messages, timed_out)


# -- figures -------------------------------------------------------------------------------------------
def figures(o: Outcome) -> tuple[dict, dict, list[float]]:
    """The scenario's figures (KEYS), the details behind them, and each job's queued -> running ms.

    A job made by a request that did not answer 2xx counts as a duplicate: its client would retry."""
    answered = o.submits + o.replays
    keys_answered = {s.key for s in answered if s.status in (200, 201)}
    completed = [j for j in o.jobs if j["status"] == "completed"]
    waits = [(j["started_at"] - j["queued_at"]).total_seconds() * 1000 for j in o.jobs
             if j["started_at"] and j["queued_at"]]
    job_messages = [m for m in o.messages if m["actor"] == "run_local_job"]
    first_by_key = {s.key: s.job_id for s in o.submits}
    details = {
        "replays": len(o.replays),
        "replays_200_same_job": sum(r.status == 200 and r.job_id == first_by_key[r.key] for r in o.replays),
        "status_counts": dict(Counter(s.status for s in answered)),
        "no_answer": sum(s.status == 0 for s in answered),
        "failed_jobs": sum(j["status"] == "failed" for j in o.jobs),
        "first_error": next((s.error for s in answered if s.error), "")
                       or next((j["error"] for j in o.jobs if j["error"]), ""),
        "messages_by_actor": dict(Counter(m["actor"] for m in o.messages)),
        "jobs_sent_twice": sum(c > 1 for c in Counter(m["args"][0] for m in job_messages).values()),
        "max_attempts": max((j["attempts"] for j in o.jobs), default=0),
        "timed_out": o.timed_out,
    }
    return {
        "submits": len(o.submits),
        "status_5xx": sum(s.status >= 500 for s in answered),
        "jobs_created": len(o.jobs),
        "jobs_completed": len(completed),
        "duplicates": max(0, len(o.jobs) - len(keys_answered)),
        "messages_sent": len(o.messages),
        "submit_p50_ms": round(percentile([s.ms for s in o.submits], 50), 1),
        "submit_p99_ms": round(percentile([s.ms for s in o.submits], 99), 1),
        "queued_to_running_p50_ms": round(percentile(waits, 50), 1),
    }, details, waits


def aggregate(outcomes: list[Outcome]) -> dict:
    per = {o.name: figures(o) for o in outcomes}
    totals = {key: sum(f[key] for f, _, _ in per.values()) for key in KEYS[:6]}
    submit_ms = [s.ms for o in outcomes for s in o.submits]
    waits = [w for _, _, ws in per.values() for w in ws]
    totals.update(submit_p50_ms=round(percentile(submit_ms, 50), 1),
                  submit_p99_ms=round(percentile(submit_ms, 99), 1),
                  queued_to_running_p50_ms=round(percentile(waits, 50), 1))
    return {**totals, "scenarios": {name: f for name, (f, _, _) in per.items()}}


# -- the message log --------------------------------------------------------------------------------------
class Probe:
    """Reads the list `_enqueue_probe.EnqueueProbe` appends to (in this run's Redis namespace)."""

    def __init__(self, redis_url: str, key: str):
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.key = key

    def llen(self) -> int:
        return self.client.llen(self.key)

    def read(self, start: int) -> list[dict]:
        return [json.loads(raw) for raw in self.client.lrange(self.key, start, -1)]

    def close(self) -> None:
        self.client.close()


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the N = 20 scenarios (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="worker threads (one torch thread each)")
    parser.add_argument("--replays", type=int, default=5, help="submits resent with the same key, per scenario")
    parser.add_argument("--timeout-per-job", type=float, default=10.0, help="seconds allowed per job")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait for late messages")
    args = parser.parse_args()
    names = QUICK if args.quick else tuple(SCENARIOS)
    print(f"load average before: {load()}", flush=True)
    started = time.monotonic()

    with Stack("burst") as stack:
        # The probe module and this script's helpers live in benchmarks/; the tiny model in the run's folder.
        stack.env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "benchmarks")]),
                         BENCH_ENQUEUE_LOG=f"{stack.namespace}:bench:enqueued",
                         WORKER_CHECKIN_SECONDS="2", JOB_RECONCILE_SECONDS="2")
        stack.setup_django()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
        from training_app.demo import ensure_tiny_models

        ensure_tiny_models()
        port = free_port()
        daphne = stack.start("daphne", [bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port),
                                        "_enqueue_probe:application"])
        worker = stack.start("worker", [bin_path("dramatiq"), "_enqueue_probe", "--processes", "1",
                                        "--threads", str(args.threads), "--queues", "gpu", "default"])
        stack.wait_for_port(port, daphne, "daphne")
        probe = Probe(stack.env["REDIS_URL"], stack.env["BENCH_ENQUEUE_LOG"])
        stack.callback(probe.close)
        outcomes = []
        try:
            for name in names:
                n_teams, n_submits = SCENARIOS[name]
                t0 = time.monotonic()
                outcome = run_scenario(name, n_teams, n_submits, f"http://127.0.0.1:{port}", probe, args)
                outcomes.append(outcome)
                scenario, details, _ = figures(outcome)
                print(f"{name}: {json.dumps(scenario)} {json.dumps(details)} "
                      f"wall_s={time.monotonic() - t0:.1f} load={load()}", flush=True)
                for label, process in (("daphne", daphne), ("worker", worker)):
                    if process.poll() is not None:
                        raise RuntimeError(f"{label} exited with {process.returncode}:\n{stack.log_tail(label)}")
        except BaseException:
            for label in ("daphne", "worker"):
                print(f"--- {label} log tail ---\n{stack.log_tail(label)}", file=sys.stderr)
            raise
        tracebacks = {label: stack.log_text(label).count("Traceback") for label in ("daphne", "worker")}
    result = aggregate(outcomes)
    print(f"tracebacks in logs: {tracebacks}; load average after: {load()}; "
          f"total wall {time.monotonic() - started:.0f} s", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
