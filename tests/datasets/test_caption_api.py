"""The captioning API: providers (live availability, no key shown back), starting, following,
cancelling and undoing runs; viewers may look, members act, admins manage providers, outsiders get 404."""

from __future__ import annotations

import pytest

from datasets_app.caption_providers import create_provider
from datasets_app.caption_runner import execute_run
from datasets_app.captioning.retry import RetryPolicy
from datasets_app.models import CaptionProvider, CaptionRun, DatasetImage, RunStatus
from tests.conftest import make_dataset
from tests.fakes.caption_servers import FakeCaptionServer

ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def shapes(team_a, member):
    return make_dataset(team_a, member, count=3, captions=False)


@pytest.fixture
def template(team_a):
    return create_provider(team_a, name="tpl", type="simple", prompt="The image shows a photo of {filename}")


def start(client, dataset, **body):
    return client.post(f"/api/datasets/{dataset.uuid}/caption", {"provider": "tpl", **body})


def test_member_starts_a_run_and_follows_it_to_the_end(shapes, member, template, api_for):
    client = api_for(member)
    response = start(client, shapes)
    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["status"], run["total"], run["done"], run["mode"], run["provider"]) == (
        "queued", 3, 0, "uncaptioned", "tpl")
    assert [s["op"] for s in run["postprocess"]] == ["strip_boilerplate", "clean", "trigger"]
    execute_run(run["id"], RetryPolicy())
    after = client.get(f"/api/caption-runs/{run['id']}").json()
    assert (after["status"], after["done"], after["failed"], after["percent"]) == ("completed", 3, 0, 100.0)
    assert set(DatasetImage.objects.values_list("caption", flat=True)) == {
        "shp, a photo of img0", "shp, a photo of img1", "shp, a photo of img2"}
    listed = client.get(f"/api/datasets/{shapes.uuid}/caption-runs").json()
    assert [r["id"] for r in listed] == [run["id"]]


def test_an_empty_postprocess_keeps_the_raw_answer(shapes, member, template, api_for):
    run = start(api_for(member), shapes, postprocess=[], prompt="The image shows {dataset}").json()
    execute_run(run["id"], RetryPolicy())
    assert set(DatasetImage.objects.values_list("caption", flat=True)) == {"The image shows shapes"}


def test_images_can_be_filtered_to_those_a_run_captioned(team_a, member, template, api_for):
    dataset = make_dataset(team_a, member, count=3, captions=False)
    first = DatasetImage.objects.filter(dataset=dataset).order_by("id").first()
    first.caption = "kept"
    DatasetImage.objects.filter(pk=first.pk).update(caption="kept")
    client = api_for(member)
    run = start(client, dataset).json()
    execute_run(run["id"], RetryPolicy())
    page = client.get(f"/api/datasets/{dataset.uuid}/images?caption_run={run['id']}").json()
    assert page["count"] == 2 and first.uuid not in {r["id"] for r in page["results"]}
    assert all(r["caption_tokens"] > 0 and r["caption_tokens_exact"] is False for r in page["results"])


@pytest.mark.parametrize("body,loc", [
    ({"mode": "sideways"}, ["body", "payload", "mode"]),
    ({"postprocess": [{"op": "sparkle"}]}, ["body", "payload", "postprocess", 0, "op"]),
    ({"postprocess": [{"op": "truncate_words", "max_words": -1}]}, ["body", "payload", "postprocess", 0, "max_words"]),
    ({"provider": ""}, ["body", "payload", "provider"]),
])
def test_bad_run_requests_are_422_with_the_field(shapes, member, template, api_for, body, loc):
    response = start(api_for(member), shapes, **body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert not CaptionRun.objects.exists()


def test_a_step_missing_its_parameter_is_refused_before_the_run(shapes, member, template, api_for):
    response = start(api_for(member), shapes, postprocess=[{"op": "truncate_words"}])
    assert response.status_code == 422 and "words above zero" in response.json()["detail"]
    assert not CaptionRun.objects.exists()


def test_a_second_run_while_one_is_active_is_409(shapes, member, template, api_for):
    client = api_for(member)
    assert start(client, shapes).status_code == 201
    assert start(client, shapes, mode="overwrite").status_code == 409


def test_cancel_then_undo_through_the_api(team_a, member, template, api_for):
    dataset = make_dataset(team_a, member, count=2, captions=True)
    client = api_for(member)
    queued = start(client, dataset, mode="overwrite").json()
    cancelled = client.post(f"/api/caption-runs/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"/api/caption-runs/{queued['id']}/cancel").status_code == 409
    assert client.post(f"/api/caption-runs/{queued['id']}/undo").status_code == 409  # changed nothing
    run = start(client, dataset, mode="overwrite").json()
    execute_run(run["id"], RetryPolicy())
    undo = client.post(f"/api/caption-runs/{run['id']}/undo")
    assert undo.json() == {"restored": 2, "skipped_edited_since": 0}
    assert set(DatasetImage.objects.values_list("caption", flat=True)) == {"shp, a square number 0",
                                                                           "shp, a square number 1"}
    assert client.get(f"/api/caption-runs/{run['id']}").json()["undone_at"] is not None


def test_a_provider_of_another_team_cannot_be_used(shapes, member, team_b, api_for):
    create_provider(team_b, name="theirs", type="simple")
    response = api_for(member).post(f"/api/datasets/{shapes.uuid}/caption", {"provider": "theirs"})
    assert response.status_code == 404 and "No caption provider" in response.json()["detail"]


def test_a_global_provider_is_usable_by_every_team(shapes, member, api_for):
    create_provider(None, name="everyone", type="simple")
    assert api_for(member).post(f"/api/datasets/{shapes.uuid}/caption", {"provider": "everyone"}).status_code == 201


def test_providers_are_listed_with_live_availability_and_never_the_key(team_a, member, api_for, monkeypatch):
    monkeypatch.setenv("CAPTION_KEY_ALPHA", "sk-very-secret-value")
    with FakeCaptionServer("openai", api_key="sk-very-secret-value") as server:
        create_provider(team_a, name="up", type="openai", base_url=server.url, model=server.model,
                        api_key_env="CAPTION_KEY_ALPHA")
        create_provider(team_a, name="wrong-model", type="openai", base_url=server.url, model="nope",
                        api_key_env="CAPTION_KEY_ALPHA")
        create_provider(team_a, name="down", type="ollama", base_url="http://127.0.0.1:9", model="llava")
        create_provider(None, name="tpl", type="simple")
        response = api_for(member).get("/api/caption-providers?team=alpha")
    assert "sk-very-secret-value" not in response.content.decode()
    listed = {p["name"]: p for p in response.json()}
    assert listed["up"]["available"] is True and listed["up"]["api_key_env"] == "CAPTION_KEY_ALPHA"
    assert listed["wrong-model"]["available"] is False and "nope" in listed["wrong-model"]["availability"]
    assert listed["down"]["available"] is False and "unreachable" in listed["down"]["availability"]
    assert listed["tpl"]["available"] is True and listed["tpl"]["team"] is None


def test_admin_adds_a_provider_and_bad_values_are_422(team_a, admin_user, api_for):
    client = api_for(admin_user)
    created = client.post("/api/caption-providers", {"team": "alpha", "name": "llava", "type": "ollama",
                                                     "base_url": "http://127.0.0.1:11434", "model": "llava"})
    assert created.status_code == 201 and created.json()["team"] == "alpha"
    bad = client.post("/api/caption-providers", {"team": "alpha", "name": "k", "type": "openai",
                                                 "base_url": "http://127.0.0.1:1/v1", "model": "m",
                                                 "api_key_env": "SECRET_KEY"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["api_key_env"]
    assert client.post("/api/caption-providers", {"team": "alpha", "name": "x", "type": "telepathy"}).status_code == 422
    provider = CaptionProvider.objects.get(name="llava")
    assert client.delete(f"/api/caption-providers/{provider.uuid}").status_code == 204


def test_member_cannot_manage_providers(team_a, member, api_for):
    client = api_for(member)
    assert client.post("/api/caption-providers", {"team": "alpha", "name": "x", "type": "simple"}).status_code == 403
    provider = create_provider(team_a, name="tpl", type="simple")
    assert client.delete(f"/api/caption-providers/{provider.uuid}").status_code == 403


def test_viewer_can_look_but_not_start_cancel_or_undo(shapes, member, viewer, template, api_for):
    run = start(api_for(member), shapes).json()
    client = api_for(viewer)
    assert client.get(f"/api/caption-runs/{run['id']}").status_code == 200
    assert client.get(f"/api/datasets/{shapes.uuid}/caption-runs").status_code == 200
    assert start(client, shapes).status_code == 403
    assert client.post(f"/api/caption-runs/{run['id']}/cancel").status_code == 403
    assert client.post(f"/api/caption-runs/{run['id']}/undo").status_code == 403


def test_outsider_gets_404_for_caption_runs_and_providers(shapes, member, outsider, template, api_for):
    run = start(api_for(member), shapes).json()
    client = api_for(outsider)
    assert start(client, shapes).status_code == 404
    assert client.get(f"/api/datasets/{shapes.uuid}/caption-runs").status_code == 404
    for path in (f"/api/caption-runs/{run['id']}", f"/api/caption-runs/{ZERO}"):
        assert client.get(path).status_code == 404
    assert client.post(f"/api/caption-runs/{run['id']}/cancel").status_code == 404
    assert client.post(f"/api/caption-runs/{run['id']}/undo").status_code == 404
    assert client.get("/api/caption-providers?team=alpha").status_code == 404
    assert client.post("/api/caption-providers", {"team": "alpha", "name": "x", "type": "simple"}).status_code == 404
    assert client.delete(f"/api/caption-providers/{template.uuid}").status_code == 404
    assert client.get(f"/api/datasets/{shapes.uuid}/images?caption_run={run['id']}").status_code == 404
    assert CaptionRun.objects.get().status == RunStatus.QUEUED


def test_anonymous_gets_401_for_caption_endpoints(shapes, template, api_for):
    client = api_for(None)
    assert start(client, shapes).status_code == 401
    assert client.get("/api/caption-providers").status_code == 401
