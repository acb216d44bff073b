"""Portal pages for training: each renders for members, is 404 for other teams, and the dashboard
costs a constant number of queries however many jobs a team has."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from training_app import lifecycle
from training_app.models import JobStatus, TeamWebhook, TrainingJob
from training_app.notifications import deliver, verify
from training_app.services import submit_job

pytestmark = pytest.mark.django_db


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def job(member, dataset_a, tiny_base_model):
    return submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"resolution": 64, "max_steps": 4})


def page_paths(job):
    return ["/teams/alpha/", "/teams/alpha/train/", f"/teams/alpha/jobs/{job.uuid}/", "/teams/alpha/compare/",
            f"/teams/alpha/compare/?jobs={job.uuid}", "/teams/alpha/settings/", "/teams/alpha/?fragment=jobs"]


def test_member_sees_every_training_page(member, job):
    client = browser(member)
    for path in page_paths(job):
        response = client.get(path)
        assert response.status_code == 200, path
    page = client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    assert job.name in page and "ws/jobs/" in page


def test_outsider_gets_404_on_every_training_page(outsider, job):
    client = browser(outsider)
    for path in page_paths(job):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/teams/alpha/jobs/{job.uuid}/cancel/").status_code == 404
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_viewer_cannot_open_the_form_or_press_buttons(viewer, job):
    client = browser(viewer)
    assert client.get("/teams/alpha/train/").status_code == 403
    assert client.post(f"/teams/alpha/jobs/{job.uuid}/cancel/").status_code == 403
    assert client.post("/teams/alpha/settings/", {"action": "limits", "max_concurrent_jobs": 9}).status_code == 403


def test_cancel_button_cancels(member, job):
    response = browser(member).post(f"/teams/alpha/jobs/{job.uuid}/cancel/")
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


def test_form_without_javascript_submits_and_shows_errors(member, dataset_a, tiny_base_model):
    client = browser(member)
    bad = {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15", "config": {"rank": 3}}
    response = client.post("/teams/alpha/train/", {"payload": json.dumps(bad)})
    assert response.status_code == 422 and b"rank must be one of 4, 8, 16, 32, 64, 128" in response.content
    good = {**bad, "config": {"rank": 4, "resolution": 64, "max_steps": 3}}
    response = client.post("/teams/alpha/train/", {"payload": json.dumps(good)})
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/teams/alpha/jobs/{job.uuid}/"


def test_clone_prefills_the_form(member, job):
    import re

    page = browser(member).get(f"/teams/alpha/train/?clone={job.uuid}").content.decode()
    data = json.loads(re.search(r'<script id="train-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["initial"]["name"] == f"{job.name} (copy)"
    assert data["initial"]["config"]["max_steps"] == 4 and data["initial"]["dataset_id"] == str(job.dataset.uuid)


def test_dashboard_queries_do_not_grow_with_jobs(member, job, dataset_a):
    client = browser(member)
    with CaptureQueriesContext(connection) as few:
        client.get("/teams/alpha/")
    for i in range(30):
        extra = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"resolution": 64})
        if i % 3 == 0:
            TrainingJob.objects.filter(pk=extra.pk).update(status=JobStatus.RUNNING)
        elif i % 3 == 1:
            TrainingJob.objects.filter(pk=extra.pk).update(status=JobStatus.COMPLETED)
    with CaptureQueriesContext(connection) as many:
        response = client.get("/teams/alpha/")
    assert response.status_code == 200
    assert len(many) == len(few)


def test_admin_manages_members_and_limits(owner, admin_user):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("newbie")
    client = browser(admin_user)
    client.post("/teams/alpha/settings/", {"action": "member", "username": "newbie", "role": "viewer"})
    client.post("/teams/alpha/settings/", {"action": "limits", "max_concurrent_jobs": "5"})
    owner.memberships.get().team.refresh_from_db()
    from lorasite.accounts.models import Membership, Team

    assert Membership.objects.get(user__username="newbie").role == "viewer"
    assert Team.objects.get(slug="alpha").max_concurrent_jobs == 5


class Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_webhook_is_signed_and_delivered_when_a_job_ends(admin_user, job, receiver, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    browser(admin_user).post("/teams/alpha/settings/", {"action": "webhook", "url": receiver})
    hook = TeamWebhook.objects.get()
    lifecycle.claim(job.pk, "w")
    lifecycle.fail(job.pk, "out of memory")
    deliver(str(job.uuid))
    headers, body = Receiver.received[0]
    assert verify(hook.secret, body, headers["X-Lorasite-Signature"])
    assert not verify("wrong-secret", body, headers["X-Lorasite-Signature"])
    event = json.loads(body)
    assert event["job"]["status"] == "failed" and event["job"]["error"] == "out of memory"
    hook.refresh_from_db()
    assert hook.last_status == "HTTP 204"


def test_webhooks_to_private_addresses_are_refused_by_default(admin_user, job, receiver):
    browser(admin_user).post("/teams/alpha/settings/", {"action": "webhook", "url": receiver})
    lifecycle.claim(job.pk, "w")
    lifecycle.complete(job.pk)
    deliver(str(job.uuid))
    assert Receiver.received == []
    assert TeamWebhook.objects.get().last_status.startswith("refused")


def test_webhook_urls_are_validated(admin_user):
    client = browser(admin_user)
    for url in ["ftp://example.com/x", "https://user:pw@example.com/", "not a url"]:
        client.post("/teams/alpha/settings/", {"action": "webhook", "url": url})
    assert not TeamWebhook.objects.exists()


def test_train_link_from_a_dataset_preselects_it(member, dataset_a, tiny_base_model):
    import re

    client = browser(member)
    detail = client.get(f"/teams/alpha/datasets/{dataset_a.uuid}/").content.decode()
    assert f"/teams/alpha/train/?dataset={dataset_a.uuid}" in detail
    page = client.get(f"/teams/alpha/train/?dataset={dataset_a.uuid}").content.decode()
    data = json.loads(re.search(r'<script id="train-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["initial"] == {"dataset_id": str(dataset_a.uuid)}


def test_job_page_says_a_queued_job_waits_for_a_worker_on_its_queue(member, job):
    page = browser(member).get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    assert "waiting for a worker on queue gpu" in page
    from lorasite.core.workers import check_in

    check_in(["gpu", "default"])
    page = browser(member).get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    assert "waiting for a worker on queue gpu" not in page


def test_job_page_says_a_loha_job_writes_only_the_kohya_file_and_what_loads_it(member, dataset_a, tiny_base_model):
    loha = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15",
                      config={"resolution": 64, "max_steps": 4, "network": "loha"})
    html = browser(member).get(f"/teams/alpha/jobs/{loha.uuid}/").content.decode()
    assert "<strong>LoHa</strong>: written as kohya / LyCORIS file; no diffusers file" in html
    assert "<dt>ComfyUI</dt><dd>yes</dd>" in html and "no (diffusers has no LoHa loader" in html
    lora = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config={"resolution": 64})
    plain = browser(member).get(f"/teams/alpha/jobs/{lora.uuid}/").content.decode()
    assert "<strong>LoRA</strong>: written as kohya / LyCORIS file and diffusers file." in plain
