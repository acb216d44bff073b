"""`manage.py add_caption_provider` (prints the id only), `manage.py caption_dataset`, the checks
every way of adding a provider shares, and the demo team's ready-made template provider."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from datasets_app.caption_providers import create_provider
from datasets_app.models import CaptionProvider, CaptionRun, DatasetImage, RunStatus
from lorasite.errors import InvalidInput
from tests.conftest import make_dataset
from tests.fakes.caption_servers import FakeCaptionServer


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_add_caption_provider_prints_only_the_new_id(team_a):
    printed = run("add_caption_provider", "vision", "--team", "alpha", "--type", "openai", "--base-url",
                  "http://127.0.0.1:9/v1", "--model", "llava", "--api-key-env", "CAPTION_KEY_ALPHA",
                  "--prompt", "Describe.", "--concurrency", "8", "--timeout", "30")
    provider = CaptionProvider.objects.get()
    assert printed.strip() == str(provider.uuid)
    assert (provider.team, provider.type, provider.model, provider.concurrency, provider.timeout_seconds,
            provider.api_key_env) == (team_a, "openai", "llava", 8, 30, "CAPTION_KEY_ALPHA")


def test_a_global_provider_has_no_team(db):
    run("add_caption_provider", "tpl", "--global", "--type", "simple", "--prompt", "a photo of {trigger}")
    assert CaptionProvider.objects.get().team is None


@pytest.mark.parametrize("args,message", [
    (["--api-key-env", "sk-live-123"], "NAME of an environment variable"),
    (["--api-key-env", "SECRET_KEY"], "must start with CAPTION_KEY_ALPHA"),
    (["--api-key-env", "CAPTION_KEY_BRAVO"], "must start with CAPTION_KEY_ALPHA"),
    (["--concurrency", "0"], "concurrency must be a whole number from 1 to 64"),
    (["--base-url", "ftp://x"], "must start with http"),
    (["--base-url", "http://user:pw@example.com/v1"], "no credentials"),
])
def test_add_caption_provider_refuses_bad_values_with_the_reason(team_a, args, message):
    base = ["add_caption_provider", "vision", "--team", "alpha", "--type", "openai", "--model", "m",
            "--base-url", "http://127.0.0.1:9/v1"]
    with pytest.raises(CommandError, match=message):
        run(*base, *args)
    assert not CaptionProvider.objects.exists()


def test_a_team_provider_may_not_target_a_private_address_unless_allowed(team_a, settings):
    settings.CAPTION_ALLOW_PRIVATE_URLS = False
    with pytest.raises(InvalidInput, match="private network") as caught:
        create_provider(team_a, name="v", type="ollama", base_url="http://127.0.0.1:11434", model="llava")
    assert caught.value.errors[0]["loc"] == ["base_url"]
    # The operator's providers (no team) are trusted.
    assert create_provider(None, name="v", type="ollama", base_url="http://127.0.0.1:11434", model="llava")


def test_a_bad_template_is_refused_when_the_provider_is_added(team_a):
    with pytest.raises(InvalidInput, match="may use only"):
        create_provider(team_a, name="tpl", type="simple", prompt="a photo of {person}")


def test_the_same_name_twice_in_a_team_is_a_conflict(team_a):
    run("add_caption_provider", "tpl", "--team", "alpha", "--type", "simple")
    with pytest.raises(CommandError, match="already has a caption provider"):
        run("add_caption_provider", "tpl", "--team", "alpha", "--type", "simple")


def test_caption_dataset_captions_from_the_terminal_and_prints_the_run_id(team_a, member):
    dataset = make_dataset(team_a, member, name="cli", count=3, captions=False)
    with FakeCaptionServer("ollama", caption="The image shows a square") as server:
        create_provider(team_a, name="llava", type="ollama", base_url=server.url, model=server.model)
        printed = run("caption_dataset", "cli", "--team", "alpha", "--provider", "llava")
    job = CaptionRun.objects.get()
    assert printed.strip() == str(job.uuid)
    assert (job.status, job.done) == (RunStatus.COMPLETED, 3)
    assert set(DatasetImage.objects.filter(dataset=dataset).values_list("caption", flat=True)) == {"shp, a square"}


def test_caption_dataset_reports_a_failed_run_as_an_error(team_a, member):
    make_dataset(team_a, member, name="cli", count=1, captions=False)
    create_provider(team_a, name="gone", type="openai", base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(CommandError, match=r"failed: 0 captioned, 0 failed of 1\. cannot reach"):
        run("caption_dataset", "cli", "--team", "alpha", "--provider", "gone")


def test_caption_dataset_with_an_unknown_provider_fails_clearly(team_a, member):
    make_dataset(team_a, member, name="cli", count=1, captions=False)
    with pytest.raises(CommandError, match="No caption provider 'nope'"):
        run("caption_dataset", "cli", "--team", "alpha", "--provider", "nope")


def test_seed_demo_gives_the_demo_team_a_template_provider(db):
    run("seed_demo")
    run("seed_demo")
    provider = CaptionProvider.objects.get(team__slug="demo")
    assert (provider.type, provider.name) == ("simple", "Template")
