"""The job page's charts read true at desktop and phone widths: whole-step ticks with the last label
inside the chart, a titled learning-rate chart, a log scale that spreads the loss over the plot,
and a notice that a random-weight demo model's samples are noise. No console error on the page."""

from __future__ import annotations

import json

import pytest

from tests.e2e.browsing import cast, finished_job, no_horizontal_overflow, sign_in, wait_for_js

# The label font uPlot draws axes with (its default).
AXIS_FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif'

# The last x label is centred on the plot's right edge at most: the chart's visible box (the card
# clips what overflows it) must leave half that label's width to the right of the plot.
TICKS_FIT = """(el, font) => {
  const u = el.uplot;
  const labels = JSON.parse(el.dataset.xTicks);
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = font;
  const last = ctx.measureText(labels[labels.length - 1]).width;
  const visible = Math.min(el.getBoundingClientRect().right, u.root.getBoundingClientRect().right);
  return {labels, gap: visible - u.over.getBoundingClientRect().right, half: last / 2};
}"""

LOSS_SPREAD = """(el) => {
  const u = el.uplot;
  const losses = u.data[1].filter((v) => v !== null);
  const lo = Math.min(...losses), hi = Math.max(...losses);
  return {span: u.valToPos(lo, "y") - u.valToPos(hi, "y"), height: u.over.clientHeight,
          ticks: JSON.parse(el.dataset.yTicks), lo, hi};
}"""


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_loss_chart_has_whole_step_ticks_a_titled_lr_chart_and_a_log_scale_that_spreads(
        browser, live_server_url, tiny_base_model, screenshot, viewport):
    maya, _team, dataset = cast()
    job = finished_job(maya, dataset, "shapes-fast", steps=60)
    short = finished_job(maya, dataset, "four-steps", steps=4)
    context, page, console = sign_in(browser, live_server_url, viewport)

    # A few steps over a wide axis: still only whole steps.
    page.goto(f"{live_server_url}/teams/alpha/jobs/{short.uuid}/")
    wait_for_js(page, "document.querySelector('[data-loss-chart]').dataset.xTicks")
    few = page.locator("[data-loss-chart]").evaluate(TICKS_FIT, AXIS_FONT)
    assert few["labels"] and all(label.isdigit() for label in few["labels"]), few

    page.goto(f"{live_server_url}/teams/alpha/jobs/{job.uuid}/")
    chart = page.locator("[data-loss-chart]")
    wait_for_js(page, "document.querySelector('[data-loss-chart]').uplot && "
                           "document.querySelector('[data-loss-chart]').dataset.xTicks")
    assert chart.get_attribute("data-points") == "60"

    fit = chart.evaluate(TICKS_FIT, AXIS_FONT)
    labels = fit["labels"]
    assert labels and all(label.isdigit() for label in labels), labels
    assert fit["gap"] >= fit["half"], fit  # the last step label is drawn inside the chart

    assert page.get_by_role("heading", name="Learning rate").is_visible()
    lr_ticks = [float(t) for t in json.loads(page.locator("[data-lr-chart]").get_attribute("data-y-ticks"))]
    assert min(lr_ticks) <= 3e-4 <= max(lr_ticks), lr_ticks

    linear = chart.evaluate(LOSS_SPREAD)
    page.get_by_label("log scale").check()
    wait_for_js(page, "document.querySelector('[data-loss-chart]').uplot.scales.y.distr === 3")
    log = chart.evaluate(LOSS_SPREAD)
    # Log scale draws the same loss over most of the plot, as linear does, with ticks in its range.
    assert log["span"] >= 0.6 * log["height"], (log, linear)
    ticks = [float(t) for t in log["ticks"]]
    assert ticks and min(ticks) >= log["lo"] / 3 and max(ticks) <= log["hi"] * 3, log
    screenshot(page, f"job-charts-{viewport}")

    # A random-weight demo model: the page says its samples are noise.
    notice = page.locator("[data-random-weights]")
    assert notice.is_visible() and "random weights" in notice.inner_text()
    assert no_horizontal_overflow(page)
    assert console.errors == []
    context.close()
