"""The dataset page stays true without a reload: new uploads appear in the grid, and the filter
counts and Stats follow uploads, review clicks, caption edits and caption tools (desktop and 390 px)."""

from __future__ import annotations

from datasets_app.models import Dataset, DatasetImage
from tests.e2e.browsing import wait_for_js
from tests.e2e.test_datasets import PASSWORD, cast, make_png


def count(page, state: str) -> int:
    """The number shown beside a filter link (state "" is All)."""
    href = "?" if not state else f"?state={state}"
    return int(page.locator(f'[data-live-panel="filter"] a[href="{href}"] .count').inner_text() or 0)


def stat(page, label: str) -> str:
    return page.locator('[data-live-panel="stats"] dt', has_text=label).first.locator("xpath=following-sibling::dd[1]") \
        .inner_text()


def wait_stat(page, label: str, value: str) -> None:
    wait_for_js(page, """([label, value]) => {
        const dt = Array.from(document.querySelectorAll('[data-live-panel="stats"] dt'))
            .find((d) => d.textContent.trim() === label);
        return dt && dt.nextElementSibling.textContent.trim() === value;
    }""", arg=[label, value], timeout=10_000)


def test_counts_stats_and_grid_follow_every_change_live(browser, live_server_url, screenshot, tmp_path):
    cast()
    for width, name in ((1280, "desktop"), (390, "phone")):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.goto(live_server_url + "/accounts/login/")
        page.get_by_label("Username").fill("maya")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/teams/alpha/")
        page.goto(live_server_url + "/teams/alpha/datasets/")
        page.get_by_label("Name", exact=True).fill(f"Live {name}")
        page.get_by_label("Trigger word").fill("ohwx")
        page.get_by_role("button", name="Create dataset").click()
        page.wait_for_url("**/teams/alpha/datasets/*/")
        dataset = Dataset.objects.get(name=f"Live {name}")
        assert count(page, "") == 0

        # Uploads: the new cards appear in the grid and the counts follow, without a reload.
        for i in range(3):
            (tmp_path / f"{name}{i}.png").write_bytes(make_png(i + (5 if name == "phone" else 0)))
        (tmp_path / f"{name}0.txt").write_text("ohwx, a white circle")
        page.locator("[data-file-input]").set_input_files(
            [str(tmp_path / f"{name}{i}.png") for i in range(3)] + [str(tmp_path / f"{name}0.txt")])
        page.locator("[data-summary-added]", has_text="3 added").wait_for(timeout=20_000)
        page.locator(".ds-card").nth(2).wait_for(timeout=10_000)
        assert page.locator(".ds-card").count() == 3
        wait_for_js(page, "document.querySelector('[data-live-panel=\"filter\"] a[href=\"?\"] .count')"
                               ".textContent.trim() === '3'", timeout=10_000)
        assert stat(page, "Images") == "3"
        assert stat(page, "Captioned") == "1"
        assert page.locator("[data-reload]").is_hidden()

        # A review click moves the counts.
        pending = count(page, "pending")
        first = page.locator(".ds-card").first
        first.locator("[data-review=approved]").click()
        wait_for_js(page, "document.querySelector('[data-live-panel=\"filter\"] a[href=\"?state=approved\"]"
                               " .count').textContent.trim() === '1'", timeout=10_000)
        assert count(page, "pending") == pending - 1
        assert stat(page, "Approved") == "1"

        # A caption typed in the grid is counted in Stats once saved.
        blank = page.locator(".ds-card", has=page.locator("[data-caption]:text-is('')")).first
        blank.locator("[data-caption]").fill("ohwx, a red square")
        blank.locator("[data-caption]").press("Tab")
        blank.locator("[data-save-state]", has_text="saved").wait_for()
        wait_stat(page, "Captioned", "2")

        # Caption tools rewrite the grid's captions in place (no "Refresh" to click).
        page.locator("[data-tool]").select_option("suffix")
        page.locator("#tool-text").fill(", film grain")
        page.get_by_role("button", name="Apply to dataset").click()
        page.locator("[data-tools-result]", has_text="captions changed").wait_for()
        page.locator("[data-caption]", has_text="film grain").first.wait_for(timeout=10_000)
        stored = list(DatasetImage.objects.filter(dataset=dataset).values_list("caption", flat=True))
        shown = page.locator("[data-caption]").evaluate_all("els => els.map((e) => e.value)")
        assert sorted(shown) == sorted(stored)
        assert sum("film grain" in c for c in stored) >= 2
        # The new cards answer review clicks too (their handlers are bound after the refresh).
        last = page.locator(".ds-card").last
        last.locator("[data-review=rejected]").click()
        wait_for_js(page, "document.querySelector('[data-live-panel=\"filter\"] a[href=\"?state=rejected\"]"
                               " .count').textContent.trim() === '1'", timeout=10_000)
        screenshot(page, f"dataset-live-{name}")
        wide = page.evaluate("""(w) => Array.from(document.querySelectorAll('body *'))
            .filter((e) => e.getBoundingClientRect().right > w + 1)
            .map((e) => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 8)""", width)
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1, wide
        assert not errors, errors
        context.close()
