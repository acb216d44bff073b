"""Server time of the team dashboard with 50 running and 500 finished jobs, and of a job page and
its chart data with 10,000 loss points (in-process Django client: views, ORM and templates, no network).

    .venv/bin/python benchmarks/dashboard.py [--running 50 --finished 500 --points 10000 --requests 60]
    DATABASE_URL=postgres://user@127.0.0.1:5432/db SECRET_KEY=x .venv/bin/python benchmarks/dashboard.py

Prints ONE JSON object on its last line: {"dashboard_p50_ms", "dashboard_p99_ms", "dashboard_queries",
"dashboard_queries_empty", "job_page_p50_ms", "events_p50_ms", "chart_points_sent", ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _inprocess import setup_django


def timed(client, path: str, requests: int) -> tuple[list[float], object]:
    times, response = [], None
    client.get(path)  # warm caches (templates, connections)
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times, response


class QueryCounter:
    """Counts SQL statements through an execute wrapper (works whatever DEBUG says)."""

    def __init__(self):
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)


def count_queries(client, path: str) -> int:
    from django.db import connection

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        client.get(path)
    return counter.count


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, default=50)
    parser.add_argument("--finished", type=int, default=500)
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()

    setup_django("dash", client_host=True)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from datasets_app.models import Dataset
    from lorasite.accounts.models import Membership, Role, Team
    from training_app.models import BaseModel, JobStatus, LossPoint, TrainingJob

    tag = f"{time.time_ns():x}"
    user = get_user_model().objects.create(username=f"bench-{tag}")
    team = Team.objects.create(slug=f"bench-{tag}", name="Bench")
    Membership.objects.create(team=team, user=user, role=Role.MEMBER)
    dataset = Dataset.objects.create(team=team, name="bench")
    model = BaseModel.objects.create(name=f"bench-{tag}", family="sd15", location="nowhere")
    client = Client()
    client.force_login(user)
    path = f"/teams/{team.slug}/"
    client.get(path)
    empty = count_queries(client, path)

    now = timezone.now()
    snapshot = {"images": [{"id": str(i), "sha256": "0" * 64, "caption": "a caption", "repeats": 1} for i in range(40)]}

    def job(status, i):
        return TrainingJob(team=team, dataset=dataset, name=f"job {i}", created_by=user, base_model=model,
                           backend="local", config={"rank": 16}, snapshot=snapshot, snapshot_sha256="x",
                           status=status, step=i % 1000, total_steps=1000, loss=0.1, avg_loss=0.1, queued_at=now,
                           started_at=now, finished_at=now if status == JobStatus.COMPLETED else None,
                           heartbeat_at=now)

    TrainingJob.objects.bulk_create([job(JobStatus.RUNNING, i) for i in range(args.running)]
                                    + [job(JobStatus.COMPLETED, i) for i in range(args.finished)], batch_size=500)
    full = count_queries(client, path)
    dashboard, _ = timed(client, path, args.requests)

    target = TrainingJob.objects.filter(team=team, status=JobStatus.RUNNING).first()
    LossPoint.objects.bulk_create([LossPoint(job=target, step=s, loss=1 / s, lr=1e-4, at=now)
                                   for s in range(1, args.points + 1)], batch_size=2000)
    job_page, response = timed(client, f"/teams/{team.slug}/jobs/{target.uuid}/", max(10, args.requests // 3))
    events, events_response = timed(client, f"/api/jobs/{target.uuid}/events", max(10, args.requests // 3))
    sent = len(events_response.json()["loss_points"])
    print(json.dumps({
        "dashboard_p50_ms": p(dashboard, 0.5), "dashboard_p99_ms": p(dashboard, 0.99),
        "dashboard_queries": full, "dashboard_queries_empty": empty,
        "running_jobs": args.running, "finished_jobs": args.finished,
        "job_page_p50_ms": round(statistics.median(job_page), 2), "events_p50_ms": round(statistics.median(events), 2),
        "loss_points_stored": args.points, "chart_points_sent": sent,
        "job_page_kb": round(len(response.content) / 1024, 1), "database": connection.vendor,
    }))


if __name__ == "__main__":
    main()
