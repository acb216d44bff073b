"""The dataset page's auto-caption panel, CLIP token counts and warnings, the "captioned by this
run" filter and review mode over a run's images."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from datasets_app import caption_runs
from datasets_app.caption_providers import create_provider
from datasets_app.caption_runner import execute_run
from datasets_app.captions import set_caption
from datasets_app.models import CaptionProvider, DatasetImage
from tests.conftest import make_dataset


@pytest.fixture
def shapes(team_a, member):
    return make_dataset(team_a, member, count=3, captions=False)


def page(user, dataset, query=""):
    client = Client()
    client.force_login(user)
    return client.get(f"/teams/{dataset.team.slug}/datasets/{dataset.uuid}/{query}")


def test_member_sees_the_auto_caption_panel_with_the_teams_captioners(shapes, member, team_a):
    create_provider(team_a, name="tpl", type="simple", prompt="a photo of {trigger}")
    html = page(member, shapes).content.decode()
    assert "data-autocaption-form" in html and "tpl (Template)" in html
    assert 'data-prompt="a photo of {trigger}"' in html


def test_viewer_sees_no_caption_controls(shapes, viewer, team_a):
    create_provider(team_a, name="tpl", type="simple")
    assert "data-autocaption-form" not in page(viewer, shapes).content.decode()


def test_each_caption_shows_its_token_count_and_a_warning_above_75(shapes, member):
    first, second = DatasetImage.objects.filter(dataset=shapes).order_by("id")[:2]
    set_caption(first, "a red circle", member)
    set_caption(second, ", ".join(["a red circle on a blue background"] * 12), member)
    html = page(member, shapes).content.decode()
    assert ">≥3 tok</span>" in html
    assert "· over 75</span>" in html and 'class="small ds-tokens warn"' in html


def test_the_run_filter_shows_only_the_images_that_run_captioned(shapes, member, team_a):
    first = DatasetImage.objects.filter(dataset=shapes).order_by("id").first()
    set_caption(first, "by hand", member)
    create_provider(team_a, name="tpl", type="simple", prompt="{filename} auto")
    run = caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [])
    execute_run(str(run.uuid))
    response = page(member, shapes, f"?run={run.uuid}")
    html = response.content.decode()
    assert "Showing the 2 images captioned by the tpl run" in html
    assert ">img1 auto</textarea>" in html and ">by hand</textarea>" not in html
    config = json.loads(response.context["page_json"])
    assert config["run"] == str(run.uuid) and config["latestRun"]["status"] == "completed"


def test_a_run_filter_from_another_team_is_404(shapes, member, outsider, team_b):
    theirs = make_dataset(team_b, outsider, name="theirs", count=1, captions=False)
    create_provider(team_b, name="tpl", type="simple")
    run = caption_runs.start_run(theirs, outsider, "tpl", None, "uncaptioned", [])
    assert page(member, shapes, f"?run={run.uuid}").status_code == 404
    assert page(member, shapes, "?run=not-a-uuid").status_code == 404


def test_review_mode_walks_just_the_images_of_a_run(shapes, member, team_a):
    create_provider(team_a, name="tpl", type="simple")
    run = caption_runs.start_run(shapes, member, "tpl", None, "uncaptioned", [])
    response = page(member, shapes, f"review/?run={run.uuid}")
    assert response.status_code == 200
    config = json.loads(response.context["config_json"])
    assert (config["run"], config["state"], config["tokenLimit"]) == (str(run.uuid), "", 75)
    assert "captioned by tpl" in response.content.decode()


def captioners_page(user, slug="alpha", data=None):
    client = Client()
    client.force_login(user)
    url = f"/teams/{slug}/captioners/"
    return client.post(url, data) if data is not None else client.get(url)


def test_admin_adds_and_removes_a_captioner_on_the_captioners_page(team_a, admin_user):
    response = captioners_page(admin_user, data={"name": "llava", "type": "ollama", "base_url": "http://127.0.0.1:9",
                                                 "model": "llava", "concurrency": "2"})
    assert response.status_code == 302
    html = captioners_page(admin_user).content.decode()
    assert 'data-captioner="llava"' in html and "unreachable" in html
    provider = CaptionProvider.objects.get(name="llava")
    assert provider.concurrency == 2 and provider.team == team_a
    captioners_page(admin_user, data={"delete": str(provider.uuid)})
    assert not CaptionProvider.objects.exists()


def test_a_bad_captioner_is_refused_on_the_page_with_the_reason(team_a, admin_user):
    client = Client()
    client.force_login(admin_user)
    response = client.post("/teams/alpha/captioners/", {"name": "k", "type": "openai", "base_url": "http://x/v1",
                                                        "model": "m", "api_key_env": "SECRET_KEY"}, follow=True)
    assert "must start with CAPTION_KEY_ALPHA" in response.content.decode()
    assert not CaptionProvider.objects.exists()


def test_members_see_captioners_but_cannot_change_them(team_a, member):
    create_provider(team_a, name="tpl", type="simple")
    html = captioners_page(member).content.decode()
    assert 'data-captioner="tpl"' in html and "data-add-captioner" not in html
    assert captioners_page(member, data={"name": "x", "type": "simple"}).status_code == 403
    assert CaptionProvider.objects.count() == 1


def test_outsider_gets_404_for_the_captioners_page(team_a, outsider):
    create_provider(team_a, name="tpl", type="simple")
    assert captioners_page(outsider).status_code == 404
    assert captioners_page(outsider, data={"name": "x", "type": "simple"}).status_code == 404
