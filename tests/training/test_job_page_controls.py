"""The job page's buttons answer in JSON when its script asks (plain forms still redirect with a
message), and the LoRA download list is one server rendering for a fresh load and a live update."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from training_app import lifecycle
from training_app.models import ArtifactKind, JobStatus
from training_app.reporting import JobReporter
from training_app.services import submit_job

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def job(member, dataset_a, tiny_base_model):
    return submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", name="shapes",
                      config={"resolution": 64, "max_steps": 40})


def url(job, action):
    return f"/teams/alpha/jobs/{job.uuid}/{action}/"


def test_a_script_gets_json_and_no_message_is_left_for_the_next_page(member, job):
    client = browser(member)
    lifecycle.claim(job.pk, "w1")
    response = client.post(url(job, "sample"), **JSON)
    assert response.status_code == 200
    assert response.json() == {"message": "The trainer will sample at its next step.", "status": "running",
                               "error": None, "attempts": 1}
    page = client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    assert "The trainer will sample" not in page


def test_cancel_then_retry_answer_with_the_new_status_and_attempts(member, job):
    client = browser(member)
    lifecycle.claim(job.pk, "w1")
    cancel = client.post(url(job, "cancel"), **JSON).json()
    assert cancel["status"] == JobStatus.CANCELLING and cancel["message"].startswith("Cancelling")
    lifecycle.finish_cancel(job.pk)
    retry = client.post(url(job, "retry"), **JSON).json()
    assert retry == {"message": "Back in the queue: it resumes from its last checkpoint.", "status": "queued",
                     "error": None, "attempts": 0}


def test_a_refused_action_is_a_json_error_with_the_reason(member, job):
    response = browser(member).post(url(job, "sample"), **JSON)  # still queued
    assert response.status_code == 422
    assert response.json() == {"detail": "Only a running job can sample now; this one is queued."}


def test_without_javascript_the_form_redirects_with_a_message(member, job):
    client = browser(member)
    response = client.post(url(job, "cancel"))
    assert response.status_code == 302
    assert "Cancelled." in client.get(response["Location"]).content.decode()


def test_outsiders_and_viewers_cannot_press_buttons_from_a_script(outsider, viewer, job):
    assert browser(outsider).post(url(job, "cancel"), **JSON).status_code == 404
    assert browser(viewer).post(url(job, "cancel"), **JSON).status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def saved_files(job, settings):
    from pathlib import Path

    out = Path(settings.MEDIA_ROOT) / job.output_dir_name()
    (out / "diffusers").mkdir(parents=True)
    kohya, diffusers = out / "shapes.safetensors", out / "diffusers" / "pytorch_lora_weights.safetensors"
    kohya.write_bytes(b"k" * 300_000)
    diffusers.write_bytes(b"d" * 2_500_000)
    reporter = JobReporter(job, "w1")
    # Diffusers first, to show the list's order is the page's, not the order files were written in.
    reporter.lora_saved("diffusers", diffusers, 5)
    reporter.lora_saved("kohya", kohya, 5)


def test_the_download_list_is_the_same_on_a_fresh_load_and_a_live_update(member, job, settings):
    lifecycle.claim(job.pk, "w1")
    saved_files(job, settings)
    client = browser(member)
    fragment = client.get(f"/teams/alpha/jobs/{job.uuid}/?fragment=files").content.decode().strip()
    page = client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    listed = re.search(r"<ul class=\"plain files\" data-files>(.*?)</ul>", page, re.S).group(1).strip()
    assert fragment == listed
    items = re.findall(r"<li data-file=\"(\w+)\">.*?<span data-size>(.*?)</span>", fragment, re.S)
    assert items == [("kohya", "293.0\xa0KB"), ("diffusers", "2.4\xa0MB")]
    stem = f"shapes-{job.uuid.hex[:8]}"
    assert f"{stem}.safetensors" in fragment and f"{stem}-diffusers.safetensors" in fragment
    assert set(job.artifacts.values_list("kind", flat=True)) == {ArtifactKind.LORA_KOHYA, ArtifactKind.LORA_DIFFUSERS}


def test_an_outsider_gets_404_for_the_files_fragment(outsider, job):
    assert browser(outsider).get(f"/teams/alpha/jobs/{job.uuid}/?fragment=files").status_code == 404


def test_the_page_shows_a_short_id_and_the_eta_only_while_running(member, job):
    client = browser(member)
    page = client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    assert job.uuid.hex[:8] in page
    assert re.search(r"<span data-eta-box hidden>", page)
    lifecycle.claim(job.pk, "w1")
    page = client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    assert re.search(r"<span data-eta-box >ETA <span data-eta>estimating…</span>", page)


def test_a_random_weight_base_model_is_called_out_and_a_real_one_is_not(member, job, tiny_base_model):
    client = browser(member)
    assert "has random weights" in client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
    tiny_base_model.random_weights = False
    tiny_base_model.save()
    assert "has random weights" not in client.get(f"/teams/alpha/jobs/{job.uuid}/").content.decode()
