"""Remote backends registered per team: the command, the Settings page, the API with live availability
from a real (loopback) ComfyUI server, jobs naming a backend, and per-backend concurrency."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tests.fakes.comfyui_server import FakeComfyUI
from training_app import lifecycle
from training_app.dispatch import dispatch_team
from training_app.models import BackendConfig, JobStatus, TrainingJob

pytestmark = pytest.mark.django_db

SMALL = {"resolution": 64, "max_steps": 4, "batch_size": 1, "optimizer": "adamw", "lr_scheduler": "constant"}


@pytest.fixture
def comfy():
    with FakeComfyUI() as server:
        yield server


def add(name, server_url, team="alpha", *extra):
    out = io.StringIO()
    call_command("add_backend", name, "--team", team, "--type", "comfyui", "--base-url", server_url,
                 "--option", "checkpoints.tiny-sd15=v1-5-pruned-emaonly.safetensors", *extra, stdout=out)
    return out.getvalue()


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_add_backend_prints_only_the_name_and_stores_the_variable_name(team_a, comfy):
    assert add("desk-comfy", comfy.url, "alpha", "--token-env", "DESK_COMFY_TOKEN") == "desk-comfy\n"
    config = BackendConfig.objects.get(name="desk-comfy")
    assert config.team == team_a and config.type == "comfyui" and config.token_env == "DESK_COMFY_TOKEN"
    assert config.options["checkpoints"] == {"tiny-sd15": "v1-5-pruned-emaonly.safetensors"}


def test_add_backend_refuses_a_token_in_place_of_a_variable_name(team_a, comfy):
    with pytest.raises(CommandError, match="NAME of an environment variable"):
        add("desk-comfy", comfy.url, "alpha", "--token-env", "r8_s3cr3tT0ken-value")
    assert not BackendConfig.objects.exists()


def test_add_backend_refuses_unknown_options_the_builtin_name_and_a_duplicate(team_a, comfy):
    with pytest.raises(CommandError, match="bogus"):
        add("desk-comfy", comfy.url, "alpha", "--option", "bogus=1")
    with pytest.raises(CommandError, match="built-in"):
        add("local", comfy.url)
    add("desk-comfy", comfy.url)
    with pytest.raises(CommandError, match="already a backend called"):
        add("desk-comfy", comfy.url)


def test_backends_api_lists_the_team_backend_with_live_version_and_free_vram(api_for, member, comfy):
    add("desk-comfy", comfy.url)
    response = api_for(member).get("/api/backends?team=alpha")
    assert response.status_code == 200
    by_name = {b["name"]: b for b in response.json()}
    assert set(by_name) == {"local", "desk-comfy"}
    desk = by_name["desk-comfy"]
    assert desk["available"] is True and desk["kind"] == "comfyui" and desk["scope"] == "team"
    assert desk["facts"]["version"] == "0.3.64" and desk["facts"]["vram_free"] == 21 * 2 ** 30
    assert "ComfyUI 0.3.64, 21.0 GiB free" in desk["detail"]
    assert "token" not in response.content.decode().lower()


def test_a_server_that_is_down_is_listed_as_unavailable(api_for, member, comfy):
    add("desk-comfy", comfy.url)
    comfy.behaviour.http_500.add("system_stats")
    desk = {b["name"]: b for b in api_for(member).get("/api/backends?team=alpha").json()}["desk-comfy"]
    assert desk["available"] is False and "HTTP 500" in desk["detail"]


def test_outsider_gets_404_for_the_team_backends(api_for, outsider, team_a, comfy):
    add("desk-comfy", comfy.url)
    assert api_for(outsider).get("/api/backends?team=alpha").status_code == 404
    # Their own team does not see team A's backend.
    names = [b["name"] for b in api_for(outsider).get("/api/backends?team=bravo").json()]
    assert names == ["local"]


def test_a_job_names_its_backend_and_is_queued_for_the_remote_queue(api_for, member, dataset_a, tiny_base_model, comfy):
    add("desk-comfy", comfy.url)
    response = api_for(member).post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                                  "backend": "desk-comfy", "config": SMALL})
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(uuid=response.json()["id"])
    assert job.backend == "desk-comfy" and job.backend_config.name == "desk-comfy"
    assert response.json()["waiting_for"] == "waiting for a worker on queue remote"


@pytest.mark.parametrize(("config", "loc", "text"), [
    ({"optimizer": "prodigy"}, "optimizer", "optimizer prodigy is not offered by this ComfyUI server"),
    ({"lr_scheduler": "cosine"}, "lr_scheduler", "lr_scheduler cosine is not offered"),
    ({"mixed_precision": "fp16"}, "mixed_precision", "mixed_precision fp16 is not offered"),
])
def test_settings_the_server_does_not_list_are_422(api_for, member, dataset_a, tiny_base_model, comfy, config, loc, text):
    add("desk-comfy", comfy.url)
    response = api_for(member).post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                                  "backend": "desk-comfy", "config": {**SMALL, **config}})
    assert response.status_code == 422
    assert text in response.json()["detail"]
    assert ["config", loc] in [e["loc"] for e in response.json()["errors"]]
    assert not TrainingJob.objects.exists()


def test_a_checkpoint_the_server_lacks_is_422(api_for, member, dataset_a, tiny_base_model, comfy):
    out = io.StringIO()
    call_command("add_backend", "desk-comfy", "--team", "alpha", "--type", "comfyui", "--base-url", comfy.url,
                 "--option", "checkpoints.tiny-sd15=missing.safetensors", stdout=out)
    response = api_for(member).post("/api/jobs", {"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                                  "backend": "desk-comfy", "config": SMALL})
    assert response.status_code == 422
    assert "has no checkpoint 'missing.safetensors'" in response.json()["detail"]


def test_admin_adds_edits_and_removes_a_backend_on_the_settings_page(admin_user, comfy):
    client = browser(admin_user)
    form = {"action": "backend", "name": "desk-comfy", "type": "comfyui", "base_url": comfy.url,
            "token_env": "DESK_TOKEN", "max_concurrent_jobs": "2", "options": '{"checkpoints": {"tiny-sd15": "a"}}'}
    assert client.post("/teams/alpha/settings/", form).status_code == 302
    config = BackendConfig.objects.get(name="desk-comfy")
    assert config.max_concurrent_jobs == 2 and config.token_env == "DESK_TOKEN"
    page = client.get("/teams/alpha/settings/").content.decode()
    assert "desk-comfy" in page and "DESK_TOKEN" not in page  # the variable's name is not shown back
    # Edited with the token field left blank: the stored name stays.
    client.post("/teams/alpha/settings/", {**form, "backend": str(config.uuid), "token_env": "",
                                           "max_concurrent_jobs": "3"})
    config.refresh_from_db()
    assert config.max_concurrent_jobs == 3 and config.token_env == "DESK_TOKEN"
    client.post("/teams/alpha/settings/", {"action": "remove-backend", "backend": str(config.uuid)})
    assert not BackendConfig.objects.exists()


def test_bad_backend_form_says_why_and_saves_nothing(admin_user, comfy):
    response = browser(admin_user).post("/teams/alpha/settings/", {
        "action": "backend", "name": "Bad Name!", "type": "comfyui", "base_url": "ftp://x", "options": "{"},
        follow=True)
    assert "Options must be a JSON object" in response.content.decode()
    response = browser(admin_user).post("/teams/alpha/settings/", {
        "action": "backend", "name": "Bad Name!", "type": "comfyui", "base_url": "ftp://x", "options": "{}"},
        follow=True)
    assert "base_url: an http(s) URL" in response.content.decode()
    assert not BackendConfig.objects.exists()


def test_member_cannot_and_outsider_does_not_see_backend_settings(member, outsider, comfy):
    add("desk-comfy", comfy.url)
    config = BackendConfig.objects.get()
    assert browser(member).post("/teams/alpha/settings/", {"action": "remove-backend",
                                                           "backend": str(config.uuid)}).status_code == 403
    assert browser(outsider).post("/teams/alpha/settings/", {"action": "remove-backend",
                                                             "backend": str(config.uuid)}).status_code == 404
    assert browser(outsider).get("/teams/alpha/settings/").status_code == 404
    # Members see the backend listed, not the forms that change it.
    page = browser(member).get("/teams/alpha/settings/").content.decode()
    assert "desk-comfy" in page and 'value="remove-backend"' not in page
    assert BackendConfig.objects.count() == 1


def test_dispatch_keeps_to_the_backends_own_limit(member, dataset_a, tiny_base_model, comfy, team_a):
    from training_app.services import submit_job

    team_a.max_concurrent_jobs = 5
    team_a.save()
    add("desk-comfy", comfy.url)
    jobs = [submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", backend="desk-comfy", config=SMALL)
            for _ in range(3)]
    local = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15", config=SMALL)
    dispatch_team(team_a.pk)  # what the job-changed listener does after each submit commits
    sent = set(TrainingJob.objects.filter(dispatched_at__isnull=False).values_list("pk", flat=True))
    # One slot on the ComfyUI server; the local job behind the waiting ones still goes.
    assert sent == {jobs[0].pk, local.pk}
    assert lifecycle.claim(jobs[0].pk, "w1") is not None
    # A stray delivery of a job beyond the backend's limit does not start it.
    assert lifecycle.claim(jobs[1].pk, "w2") is None
    lifecycle.fail(jobs[0].pk, "done")
    dispatch_team(team_a.pk)
    assert TrainingJob.objects.get(pk=jobs[1].pk).dispatched_at is not None
    assert TrainingJob.objects.get(pk=jobs[2].pk).dispatched_at is None
    assert TrainingJob.objects.get(pk=jobs[2].pk).status == JobStatus.QUEUED
