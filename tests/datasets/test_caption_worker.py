"""Auto-captioning end to end across processes: daphne serves the API and the dataset websocket, a
real dramatiq worker process on Redis captions a 20-image dataset against a loopback OpenAI-style
server; versions, websocket progress, post-processing, a cancel, and a worker killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import httpx
import pytest
import redis
from websockets.sync.client import connect

from datasets_app.caption_providers import create_provider
from datasets_app.models import Caption, CaptionRun, CaptionRunItem, CaptionSource, DatasetImage, RunStatus
from lorasite.accounts.models import ApiToken
from tests.conftest import make_dataset
from tests.fakes.caption_servers import FakeCaptionServer
from tests.services import (
    bin_path,
    free_port,
    production_env,
    require_redis,
    start_process,
    stop_process,
    wait_for_port,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def wait_for(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


class Socket:
    """The dataset websocket, read in a thread into a list."""

    def __init__(self, url: str, token: str):
        self.messages: list[dict] = []
        self.opened = threading.Event()
        self.connection = None
        self.thread = threading.Thread(target=self._read, args=(url, token), daemon=True)
        self.thread.start()
        assert self.opened.wait(20), "the dataset websocket did not open"

    def _read(self, url: str, token: str):
        with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=20) as ws:
            self.connection = ws
            self.opened.set()
            try:
                for raw in ws:
                    self.messages.append(json.loads(raw))
            except Exception:
                pass

    def of_run(self, run_id: str, kind: str) -> list[dict]:
        key = "run" if kind == "caption_progress" else "id"
        return [m for m in self.messages if m.get("type") == kind and m.get(key) == run_id]

    def close(self):
        self.connection.close()
        self.thread.join(5)


@pytest.fixture
def stack(settings):
    """daphne + one captioning worker process, on Redis, with a private namespace."""
    from django.db import connection

    if connection.vendor == "sqlite":
        # Three processes writing at once: SQLite answers "database is locked". CI runs Postgres.
        pytest.skip("needs Postgres (the test run fell back to SQLite)")
    redis_url = require_redis()
    namespace = f"lorasite-caption-{uuid.uuid4().hex[:8]}"
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=namespace, CHANNEL_LAYER_PREFIX=namespace,
                         ALLOWED_HOSTS="127.0.0.1", WORKER_CHECKIN_SECONDS="1", JOB_RECONCILE_SECONDS="1",
                         CAPTION_RUN_STALE_SECONDS="3")
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"], env)
    processes = {"web": web}

    def start_worker():
        processes["worker"] = start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1",
                                             "--threads", "2", "--queues", "captioning", "default"], env)
        return processes["worker"]

    start_worker()
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for_port(port, web)
        yield {"port": port, "start_worker": start_worker, "processes": processes}
    finally:
        for name, process in processes.items():
            log = stop_process(process, timeout=15)
            if "Traceback" in log:
                print(f"--- {name} ---\n{log[-5000:]}")
        for key in client.scan_iter(f"{namespace}:*"):
            client.delete(key)
        client.close()


def test_a_dataset_is_captioned_by_a_worker_process_with_live_progress_cancel_and_resume(stack, team_a, member):
    dataset = make_dataset(team_a, member, name="twenty", count=20, captions=False)
    token = ApiToken.issue(member, "e2e")[1]
    base = f"http://127.0.0.1:{stack['port']}"
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    socket = Socket(f"ws://127.0.0.1:{stack['port']}/ws/datasets/{dataset.uuid}/", token)
    with FakeCaptionServer("openai", caption="The image shows flat_shape, {width}px, flat_shape", delay=0.05) as server:
        create_provider(team_a, name="vision", type="openai", base_url=server.url, model=server.model,
                        concurrency=4, timeout_seconds=10)
        try:
            # 1. A whole run: every image one version, cleaned by the chosen steps.
            steps = [{"op": "strip_boilerplate"}, {"op": "underscores"}, {"op": "dedupe_tags"}, {"op": "clean"},
                     {"op": "trigger"}, {"op": "append_tags", "tags": "flat colours"}]
            response = api.post(f"/api/datasets/{dataset.uuid}/caption", json={"provider": "vision",
                                                                               "postprocess": steps})
            assert response.status_code == 201, response.text
            run_id = response.json()["id"]
            assert wait_for(lambda: api.get(f"/api/caption-runs/{run_id}").json()["status"] == "completed", 60)
            run = api.get(f"/api/caption-runs/{run_id}").json()
            assert (run["done"], run["failed"], run["total"]) == (20, 0, 20)
            assert set(DatasetImage.objects.filter(dataset=dataset).values_list("caption", flat=True)) == {
                "shp, flat shape, 64px, flat colours"}
            versions = Caption.objects.filter(batch=run_id)
            assert versions.count() == 20 and versions.values("image").distinct().count() == 20
            assert {(v.source, v.provider_model) for v in versions} == {(CaptionSource.PROVIDER, "vision: fake-vision-1")}
            assert server.max_in_flight == 4
            # Progress arrived on the websocket as it went, ending at 20, with every new caption.
            assert wait_for(lambda: any(m["status"] == "completed" for m in socket.of_run(run_id, "caption_run")), 10)
            progress = socket.of_run(run_id, "caption_progress")
            assert len(progress) >= 2 and progress[-1]["done"] == 20
            assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
            assert len({c["image"] for p in progress for c in p["captions"]}) == 20

            # 2. Cancel: a slow server, two threads; the run stops and keeps what it saved.
            server.delay = 0.3
            provider_concurrency(2)
            response = api.post(f"/api/datasets/{dataset.uuid}/caption",
                                json={"provider": "vision", "mode": "overwrite", "postprocess": []})
            slow_id = response.json()["id"]
            assert wait_for(lambda: CaptionRun.objects.get(uuid=slow_id).done >= 2, 30)
            assert api.post(f"/api/caption-runs/{slow_id}/cancel").json()["status"] in ("cancelling", "cancelled")
            assert wait_for(lambda: CaptionRun.objects.get(uuid=slow_id).status == RunStatus.CANCELLED, 15)
            slow = CaptionRun.objects.get(uuid=slow_id)
            assert 2 <= slow.done < 20
            assert Caption.objects.filter(batch=slow_id).count() == slow.done
            assert CaptionRunItem.objects.filter(run=slow, status="pending").count() == 20 - slow.done - slow.failed

            # 3. The worker is killed mid-run; a new worker takes the stale run over and finishes it,
            # never writing a second version for an image.
            server.delay = 0.15
            server.caption = "a shape seen by the run that loses its worker, {width}px"
            response = api.post(f"/api/datasets/{dataset.uuid}/caption",
                                json={"provider": "vision", "mode": "overwrite", "postprocess": []})
            killed_id = response.json()["id"]
            assert wait_for(lambda: CaptionRun.objects.get(uuid=killed_id).done >= 4, 30)
            kill_hard(stack["processes"]["worker"])
            done_at_kill = CaptionRun.objects.get(uuid=killed_id).done
            assert done_at_kill < 20
            posts_at_kill = len(server.posts())
            stack["start_worker"]()
            assert wait_for(lambda: CaptionRun.objects.get(uuid=killed_id).status == RunStatus.COMPLETED, 90, 0.3)
            killed = CaptionRun.objects.get(uuid=killed_id)
            assert (killed.done, killed.attempts) == (20, 2)
            versions = Caption.objects.filter(batch=killed_id)
            assert versions.count() == 20 and versions.values("image").distinct().count() == 20
            # Only the images not saved before the kill (plus those in flight then) were asked again.
            assert len(server.posts()) - posts_at_kill <= 20 - done_at_kill + 4
        finally:
            socket.close()
            api.close()


def kill_hard(process) -> None:
    """SIGKILL dramatiq's worker child first (killed alone, the parent would leave it running), then
    the parent: nothing gets to finish, acknowledge or clean up, as in a power cut."""
    path = f"/proc/{process.pid}/task/{process.pid}/children"
    with open(path) as handle:
        children = [int(pid) for pid in handle.read().split()]
    assert children, "dramatiq started no worker process"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def provider_concurrency(value: int) -> None:
    from datasets_app.models import CaptionProvider

    CaptionProvider.objects.filter(name="vision").update(concurrency=value)



