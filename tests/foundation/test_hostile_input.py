"""Hostile text at the edge: a NUL character (which Postgres text cannot hold) anywhere in a request's
text is a 422 naming the field, never a 500, and nothing is written."""

from __future__ import annotations

import pytest
from django.test import Client

from datasets_app.models import Dataset
from lorasite.accounts.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("method", "path", "body", "loc"), [
    ("post", "/api/datasets?team=alpha", {"name": "bad\x00name"}, ["body", "name"]),
    ("post", "/api/tokens", {"name": "tok\x00en"}, ["body", "name"]),
    ("put", "/api/teams/alpha/members", {"username": "evil\x00", "role": "viewer"}, ["body", "username"]),
    ("post", "/api/jobs", {"dataset_id": "x", "name": "j\x00b", "config": {"trigger_word": "a\x00"}}, ["body", "name"]),
    ("post", "/api/jobs", {"dataset_id": "x", "config": {"sample_prompts": ["ok", "b\x00d"]}},
     ["body", "config", "sample_prompts", 1]),
    ("get", "/api/datasets?team=%00", None, ["query", "team"]),
])
def test_a_nul_character_in_any_api_text_is_a_422_naming_the_field(api_for, owner, method, path, body, loc):
    api = api_for(owner)
    response = getattr(api, method)(path, body) if body is not None else api.get(path)
    assert response.status_code == 422, response.content
    assert response.json()["errors"] == [{"loc": loc, "msg": "contains a NUL (\\x00) character, which text "
                                                           "fields cannot hold"}]
    assert not Dataset.objects.exists()
    assert ApiToken.objects.count() == 1  # the test's own


def test_a_nul_character_in_a_caption_is_refused_and_the_caption_kept(api_for, member, dataset_a):
    image = dataset_a.images.first()
    response = api_for(member).patch(f"/api/images/{image.uuid}", {"caption": "a\x00b"})
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "caption"]
    image.refresh_from_db()
    assert "\x00" not in image.caption


def test_a_nul_character_in_an_html_form_is_a_422_page(member):
    client = Client()
    client.force_login(member)
    response = client.post("/teams/alpha/datasets/", {"name": "x\x00y", "trigger_word": "zz",
                                                      "default_resolution": "512"})
    assert response.status_code == 422 and b"name contains a NUL" in response.content
    assert not Dataset.objects.filter(name__startswith="x").exists()


def test_a_page_number_past_the_end_is_the_last_page_not_a_500(api_for, member, dataset_a):
    huge = "99999999999999999999"
    body = api_for(member).get(f"/api/datasets/{dataset_a.uuid}/images?page={huge}").json()
    assert body["page"] == body["pages"] == 1 and len(body["results"]) == dataset_a.images.count()
    client = Client()
    client.force_login(member)
    page = client.get(f"/teams/alpha/datasets/{dataset_a.uuid}/?page={huge}")
    assert page.status_code == 200 and page.content.decode().count('class="ds-card"') == dataset_a.images.count()
