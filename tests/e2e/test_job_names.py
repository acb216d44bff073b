"""Jobs of the same name can be told apart, at desktop and phone width: the dashboard and Compare
show each job's short id and date; on Compare two identical runs are drawn in different colours and
dashes with a legend of names; the dashboard's Recent table fits a 390 px screen."""

from __future__ import annotations

import pytest

from tests.e2e.browsing import cast, finished_job, no_horizontal_overflow, sign_in, wait_for_js

SERIES_STYLES = """(el) => el.uplot.series.slice(1).map((s) => ({
  label: s.label, stroke: typeof s.stroke === "function" ? s.stroke(el.uplot, 1) : s.stroke, dash: s.dash || []}))"""


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_same_name_jobs_are_told_apart_on_the_dashboard_and_compare(browser, live_server_url, tiny_base_model,
                                                                   screenshot, viewport):
    maya, _team, dataset = cast()
    # Two identical runs: same name, same settings, the same curve to the last digit.
    first = finished_job(maya, dataset, "shapes-fast", seed=7)
    second = finished_job(maya, dataset, "shapes-fast", seed=7)
    ids = [first.uuid.hex[:8], second.uuid.hex[:8]]
    context, page, console = sign_in(browser, live_server_url, viewport)

    page.goto(f"{live_server_url}/teams/alpha/")
    page.locator("[data-live-state].live").wait_for(timeout=10_000)
    rows = page.locator("#recent-h ~ * tr[data-job]")
    assert rows.count() == 2
    # The Recent table fits the card at this width: nothing scrolls sideways, nothing is cut.
    assert no_horizontal_overflow(page)
    fits = page.evaluate("""() => {
      const table = document.querySelector("#recent-h").closest("section").querySelector("table");
      return table.scrollWidth <= table.parentElement.clientWidth;
    }""")
    assert fits
    screenshot(page, f"dashboard-same-names-{viewport}")
    texts = rows.all_inner_texts()
    for job_id in ids:
        assert sum(job_id in text for text in texts) == 1, texts
    date = first.created_at.strftime("%Y-%m-%d")
    assert all(date in text for text in texts), texts

    page.goto(f"{live_server_url}/teams/alpha/compare/")
    labels = page.locator(".compare-pick label").all_inner_texts()
    for job_id in ids:
        assert sum(job_id in label for label in labels) == 1, labels
    for job_id in ids:
        page.locator(".compare-pick label", has_text=job_id).locator("input").check()
    page.get_by_role("button", name="Compare").click()
    chart = page.locator("[data-compare-chart]")
    wait_for_js(page, "document.querySelector('[data-compare-chart]').uplot")
    styles = chart.evaluate(SERIES_STYLES)
    assert len(styles) == 2
    assert styles[0]["stroke"] != styles[1]["stroke"] and styles[0]["dash"] != styles[1]["dash"], styles
    assert [s["label"] for s in styles] == [f"shapes-fast · {job_id}" for job_id in ids[::-1]] or \
        sorted(s["label"] for s in styles) == sorted(f"shapes-fast · {job_id}" for job_id in ids), styles
    legend = page.locator("[data-compare-legend] li").all_inner_texts()
    assert sorted(legend) == sorted(s["label"] for s in styles), legend
    assert no_horizontal_overflow(page)
    screenshot(page, f"compare-identical-runs-{viewport}")
    assert console.errors == []
    context.close()
