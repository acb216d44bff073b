"""Websocket fan-out: progress-message latency from a job's reporter to 200 websocket clients watching
that job, at 10 progress messages a second, through one daphne process and channels-redis.

    .venv/bin/python benchmarks/ws_fanout.py [--clients 200 --rate 10 --duration 20 --baseline-duration 5]

One `daphne lorasite.asgi:application` process in production mode (REDIS_URL, so channels-redis),
N clients (the `websockets` library, all in this process's event loop) on /ws/jobs/<uuid>/ with a
bearer token, each first receiving its "snapshot". Then a publisher subprocess (this script with
--publisher) claims the job with `lifecycle.claim` and drives the real `JobReporter.step()` (default
publish_interval 0.1 s) at --rate Hz, writing `step time.time() published step_ms` per call. Latency is
a client's receive time minus the time the publisher called step() for that step, joined on the step
number. Baseline, same run and daphne: one client watching another job, for --baseline-duration s.
Needs Postgres and Redis on 127.0.0.1; makes its own throwaway database and Redis prefix.
Prints ONE JSON object on its last line: {"clients", "delivered_ratio", "p50_ms", "p99_ms", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stack import Stack, bin_path, cpu_seconds, free_port, percentile

GRACE_S = 5.0  # after the last step, how long clients may take to get it before the phase stops


def make_fixtures(jobs: int) -> tuple[str, list]:
    """A team, a viewer with an API token, and queued jobs on a dataset and base model."""
    from django.contrib.auth import get_user_model

    from datasets_app.models import Dataset
    from lorasite.accounts.models import ApiToken, Membership, Role, Team
    from training_app.models import BaseModel, TrainingJob

    team = Team.objects.create(slug="bench", name="Bench", max_concurrent_jobs=jobs)
    user = get_user_model().objects.create_user("bench-viewer", password=None)
    Membership.objects.create(team=team, user=user, role=Role.VIEWER)
    _, raw = ApiToken.issue(user, "ws-fanout")
    dataset = Dataset.objects.create(team=team, name="bench")
    base = BaseModel.objects.create(name="bench-sd15", family="sd15", location="missing/bench-sd15")
    return raw, [TrainingJob.objects.create(team=team, dataset=dataset, name=f"fan-out-{i}", created_by=user,
                                            base_model=base, backend="local", config={}, snapshot={},
                                            snapshot_sha256="x") for i in range(jobs)]


# -- the publisher (a subprocess, like a GPU worker) ------------------------------------------------
def run_publisher(job_pk: int, steps: int, rate: float, out: Path) -> None:
    import django

    django.setup()
    from training_app import lifecycle
    from training_app.reporting import JobReporter

    job = lifecycle.claim(job_pk, "bench")
    if job is None:
        raise SystemExit("could not claim the job")
    reporter = JobReporter(job, "bench")
    interval = 1.0 / rate + 0.001  # a hair over the reporter's throttle, so every step is published
    lines, next_at = [], time.monotonic()
    for step in range(1, steps + 1):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        before, called, mono = reporter.published_progress, time.time(), time.monotonic()
        reporter.step(step, steps, loss=1.0 / step, lr=1e-4)
        lines.append(f"{step} {called:.6f} {int(reporter.published_progress > before)} "
                     f"{(time.monotonic() - mono) * 1000:.3f}")
        next_at = mono + interval
    out.write_text("\n".join(lines) + "\n")


# -- the clients ------------------------------------------------------------------------------------
class Client:
    def __init__(self, index: int):
        self.index = index
        self.received: list[tuple[float, str]] = []
        self.ws = None

    async def connect(self, url: str, token: str, gate: asyncio.Semaphore) -> None:
        import websockets

        async with gate:
            self.ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                               ping_interval=None, open_timeout=60, max_queue=None)
            first = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
        if first.get("type") != "snapshot":
            raise RuntimeError(f"client {self.index}: expected a snapshot first, got {first}")

    async def listen(self) -> None:
        import websockets

        try:
            async for raw in self.ws:
                self.received.append((time.time(), raw))  # parse later: keep the receive path short
        except websockets.ConnectionClosed:
            pass

    def has_step(self, step: int) -> bool:
        return any(json.loads(raw).get("step") == step for _, raw in self.received[-3:])

    def progress_steps(self) -> dict[int, float]:
        """First receive time of each progress step."""
        seen: dict[int, float] = {}
        for at, raw in self.received:
            message = json.loads(raw)
            if message.get("type") == "progress":
                seen.setdefault(message["step"], at)
        return seen


async def phase(stack: Stack, port: int, daphne_pid: int, token: str, job, count: int, duration: float,
                args) -> dict:
    """`count` clients watch `job` while the publisher runs `duration` seconds; then all close at once."""
    url = f"ws://127.0.0.1:{port}/ws/jobs/{job.uuid}/"
    clients = [Client(i) for i in range(count)]
    gate = asyncio.Semaphore(args.connect_concurrency)
    listeners: list[asyncio.Task] = []
    started = time.monotonic()
    try:
        await asyncio.gather(*(c.connect(url, token, gate) for c in clients))
        connect_s = time.monotonic() - started
        listeners = [asyncio.create_task(c.listen()) for c in clients]
        cpu_before = (cpu_seconds(daphne_pid), time.process_time())
        calls = await publish(stack, job, max(1, round(duration * args.rate)), args.rate)
        cpu = [after - before for after, before in
               zip((cpu_seconds(daphne_pid), time.process_time()), cpu_before, strict=True)]
        last = max(int(step) for step, *_ in calls)
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and not all(c.has_step(last) for c in clients):
            await asyncio.sleep(0.1)
    finally:
        # All at once, as when many browser tabs go away together.
        await asyncio.gather(*(c.ws.close() for c in clients if c.ws is not None), return_exceptions=True)
        await asyncio.gather(*listeners, return_exceptions=True)
    result = analyse(clients, calls)
    wall = max(result["duration_s"], 0.1)
    result.update(connect_s=round(connect_s, 1), daphne_cpu_pct=round(100 * cpu[0] / wall),
                  clients_cpu_pct=round(100 * cpu[1] / wall),
                  daphne_cpu_ms_per_message=round(1000 * cpu[0] / max(1, result["messages_per_client"]), 1),
                  group_members_after_close=await members_left(stack, job))
    return result


async def publish(stack: Stack, job, steps: int, rate: float) -> list[list[str]]:
    """Run the publisher subprocess to its end; its `step time published step_ms` lines."""
    name = f"publisher-{job.pk}"
    out = stack.work / f"{name}.txt"
    publisher = stack.start(name, [sys.executable, str(Path(__file__).resolve()), "--publisher", str(job.pk),
                                   "--steps", str(steps), "--rate", str(rate), "--out", str(out)])
    while publisher.poll() is None:
        await asyncio.sleep(0.2)
    if publisher.returncode != 0:
        raise RuntimeError(f"publisher exited with {publisher.returncode}:\n{stack.log_tail(name)}")
    return [line.split() for line in out.read_text().splitlines()]


async def members_left(stack: Stack, job, wait_s: float = 3.0) -> int:
    """Channels still in the job's group after every client closed (each disconnect discards its own)."""
    import redis.asyncio

    from lorasite.realtime import job_group

    client = redis.asyncio.Redis.from_url(stack.env["REDIS_URL"])
    key = f"{stack.namespace}:group:{job_group(job.uuid)}"  # channels-redis' group key
    try:
        deadline = time.monotonic() + wait_s
        while (left := await client.zcard(key)) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return left
    finally:
        await client.aclose()


def analyse(clients: list[Client], calls: list[list[str]]) -> dict:
    called_at = {int(s): float(t) for s, t, published, _ in calls if published == "1"}
    step_ms = [float(ms) for _, _, published, ms in calls if published == "1"]
    per_step: dict[int, list[float]] = {step: [] for step in called_at}
    for client in clients:
        for step, at in client.progress_steps().items():
            if step in per_step:
                per_step[step].append((at - called_at[step]) * 1000)
    latencies = [ms for values in per_step.values() for ms in values]
    expected = len(clients) * len(called_at)
    firsts = [min(v) for v in per_step.values() if v]
    spreads = [max(v) - min(v) for v in per_step.values() if v]
    wall = (max(called_at.values()) - min(called_at.values())) if called_at else 0.0

    def r(value: float) -> float:
        return round(value, 1) if not math.isnan(value) else value

    return {
        "clients": len(clients),
        "delivered_ratio": round(len(latencies) / expected, 4) if expected else 0.0,
        "p50_ms": r(percentile(latencies, 50)),
        "p99_ms": r(percentile(latencies, 99)),
        "max_ms": r(max(latencies, default=math.nan)),
        "messages_per_client": len(called_at),
        "steps_called": len(calls),
        "rate_hz": round((len(called_at) - 1) / wall, 2) if wall else 0.0,
        "duration_s": round(wall, 1),
        "first_client_p50_ms": r(percentile(firsts, 50)),
        "fanout_spread_p50_ms": r(percentile(spreads, 50)),
        "fanout_spread_p99_ms": r(percentile(spreads, 99)),
        "publisher_step_p50_ms": r(statistics.median(step_ms)) if step_ms else math.nan,
    }


async def run(stack: Stack, port: int, daphne_pid: int, token: str, jobs: list, args) -> dict:
    result: dict = {}
    if args.baseline_duration > 0:
        base = await phase(stack, port, daphne_pid, token, jobs[1], 1, args.baseline_duration, args)
        result.update(baseline_1_client_p50_ms=base["p50_ms"], baseline_1_client_p99_ms=base["p99_ms"])
    main_phase = await phase(stack, port, daphne_pid, token, jobs[0], args.clients, args.duration, args)
    return {**main_phase, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="reporter.step() calls a second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    parser.add_argument("--baseline-duration", type=float, default=5.0,
                        help="seconds of the 1-client baseline; 0 skips it")
    parser.add_argument("--connect-concurrency", type=int, default=20, help="websocket handshakes at once")
    parser.add_argument("--publisher", type=int, metavar="JOB_PK", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher is not None:
        run_publisher(args.publisher, args.steps, args.rate, args.out)
        return

    with Stack("ws") as stack:
        stack.setup_django()
        token, jobs = make_fixtures(2)
        port = free_port()
        daphne = stack.start("daphne", [bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port),
                                        "lorasite.asgi:application"])
        stack.wait_for_port(port, daphne, "daphne")
        try:
            result = asyncio.run(run(stack, port, daphne.pid, token, jobs, args))
        except BaseException:
            print(stack.log_tail("daphne"), file=sys.stderr)
            raise
        if daphne.poll() is not None:
            raise RuntimeError(f"daphne died during the run:\n{stack.log_tail('daphne')}")
        result["daphne_tracebacks"] = stack.log_text("daphne").count("Traceback")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
