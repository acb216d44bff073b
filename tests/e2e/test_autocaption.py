"""Auto-captioning the demo dataset from its page: pick a captioner, press one button, watch the
bar move and the captions change in the grid, then filter, review and undo that run."""

from __future__ import annotations

import io

from django.contrib.auth import get_user_model
from django.core.management import call_command

from datasets_app.caption_providers import create_provider
from datasets_app.models import CaptionRun, Dataset, DatasetImage, RunStatus
from lorasite.accounts.models import Team
from tests.e2e.test_datasets import session_cookie
from tests.fakes.caption_servers import FakeCaptionServer

# Collects every width the progress bar takes, so the test can tell the bar moved, not just jumped.
WATCH_BAR = """() => {
    window.barWidths = [];
    const fill = document.querySelector("[data-ac-bar] span");
    new MutationObserver(() => window.barWidths.push(parseFloat(fill.style.width))).observe(
        fill, {attributes: true, attributeFilter: ["style"]});
}"""


def seed():
    call_command("seed_demo", stdout=io.StringIO())
    return Team.objects.get(slug="demo")


def open_demo_dataset(browser, live_server_url):
    user = get_user_model().objects.get(username="demo")
    dataset = Dataset.objects.get(name="demo-shapes")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([session_cookie(user, live_server_url)])
    page = context.new_page()
    page.goto(f"{live_server_url}/teams/demo/datasets/{dataset.uuid}/")
    page.locator("[data-ac-availability]", has_text="✓").wait_for(timeout=15_000)
    return context, page, dataset


def test_member_captions_the_demo_dataset_and_watches_the_bar_and_grid(browser, live_server_url, screenshot):
    with FakeCaptionServer("openai", caption="The image shows a bold shape, flat colours", delay=0.15) as server:
        create_provider(seed(), name="Vision", type="openai", base_url=server.url, model=server.model,
                        concurrency=2)
        context, page, dataset = open_demo_dataset(browser, live_server_url)
        page.select_option("[data-ac-provider]", label=f"Vision (OpenAI-compatible vision chat: {server.model})")
        page.select_option("[data-ac-mode]", "overwrite")
        page.evaluate(WATCH_BAR)
        first_card = page.locator(".ds-card").first.locator("[data-caption]")
        assert first_card.input_value().startswith("shp, a red circle")
        page.get_by_role("button", name="Caption dataset").click()
        page.locator("[data-ac-status]", has_text="completed").wait_for(timeout=60_000)
        widths = page.evaluate("window.barWidths")
        assert any(0 < w < 100 for w in widths), widths
        assert widths[-1] == 100
        # The grid changed without a reload: every caption is the captioner's, cleaned.
        captions = page.locator("[data-caption]").evaluate_all("els => els.map(e => e.value)")
        assert captions == ["shp, a bold shape, flat colours"] * 12
        assert page.locator("[data-ac-counts]").inner_text() == "12 / 12 images"
        screenshot(page, "autocaption-done")
        run = CaptionRun.objects.get(provider_name="Vision")
        assert (run.status, run.done) == (RunStatus.COMPLETED, 12)

        page.locator("[data-ac-review]").click()
        page.locator("[data-review-position]", has_text="1 / 12").wait_for()
        assert page.locator("[data-review-caption]").input_value() == "shp, a bold shape, flat colours"
        assert "CLIP tokens" in page.locator("[data-review-tokens]").inner_text()
        page.go_back()
        page.locator("[data-ac-undo]").click()
        page.locator("[data-ac-result]", has_text="12 captions restored").wait_for()
        context.close()
    assert DatasetImage.objects.filter(dataset=dataset, caption__startswith="shp, a red circle").exists()


def test_the_demo_template_captioner_works_from_the_page(browser, live_server_url):
    seed()
    context, page, _dataset = open_demo_dataset(browser, live_server_url)
    page.select_option("[data-ac-mode]", "overwrite")
    page.get_by_role("button", name="Caption dataset").click()
    page.locator("[data-ac-status]", has_text="completed").wait_for(timeout=30_000)
    first = page.locator(".ds-card").first.locator("[data-caption]")
    assert first.input_value() == "a photo of shp, 00 red circle"
    page.locator("[data-ac-filter]").click()
    page.locator("[data-run-filter]").wait_for()
    assert page.locator(".ds-card").count() == 12
    context.close()
