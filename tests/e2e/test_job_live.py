"""A new job's page tells the truth live, at desktop and phone width at once: the phases before the
first step (loading model, caching latents n/N, caching text) in the status line and the log, an
ETA that says "estimating" until it has something to go on and is gone once the job is done, and a
loss chart that holds every step's point, not only those that fell on a throttled publish."""

from __future__ import annotations

from tests.e2e.browsing import cast, no_horizontal_overflow, sign_in, wait_for_js, wait_for_status
from training_app.models import JobStatus, TrainingJob
from training_app.services import submit_job

STEPS = 60

# Every text the phase and ETA spans take, in order, whether shown for a second or a millisecond.
RECORD = """() => {
  window.seen = {phase: [], eta: []};
  const keep = (list, el) => {
    const text = el.hidden ? "" : el.textContent.trim();
    if (list[list.length - 1] !== text) list.push(text);
  };
  const phase = document.querySelector("[data-phase]"), eta = document.querySelector("[data-eta]");
  const etaBox = document.querySelector("[data-eta-box]");
  const watch = (el, list, box) => new MutationObserver(() => keep(list, box || el))
    .observe(el, {childList: true, characterData: true, subtree: true, attributes: true});
  watch(phase, window.seen.phase);
  watch(eta, window.seen.eta);
  new MutationObserver(() => { if (etaBox.hidden) keep(window.seen.eta, etaBox); })
    .observe(etaBox, {attributes: true});
  keep(window.seen.phase, phase);
}"""


def test_a_new_job_shows_its_phases_a_settling_eta_and_every_point_live(browser, live_server_url, tiny_base_model,
                                                                        screenshot):
    maya, _team, dataset = cast()
    pages = {}
    for viewport in ("desktop", "phone"):
        pages[viewport] = sign_in(browser, live_server_url, viewport)
    # Queued from here: the server's reconciler sends it to its embedded worker within seconds,
    # while both pages are already watching.
    job = submit_job(maya, dataset_id=dataset.uuid, base_model="tiny-sd15", name="live-shapes",
                     config={"resolution": 64, "max_steps": STEPS, "batch_size": 2, "rank": 4})
    for _context, page, _console in pages.values():
        page.goto(f"{live_server_url}/teams/alpha/jobs/{job.uuid}/")
        page.evaluate(RECORD)

    desktop = pages["desktop"][1]
    desktop.locator("[data-phase]", has_text="loading model").wait_for(timeout=120_000)
    screenshot(desktop, "job-phase-desktop")
    for _context, page, _console in pages.values():
        wait_for_status(page, "completed", job, timeout=300_000)
        wait_for_js(page, f"document.querySelector('[data-loss-chart]').dataset.points === '{STEPS}'",
                               timeout=10_000)

    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.COMPLETED
    for viewport, (context, page, console) in pages.items():
        seen = page.evaluate("window.seen")
        phases = [text for text in seen["phase"] if text]
        # Each phase in order, the latents counted up to all 4 images, then hidden while training.
        assert phases[0] == "loading model", seen
        assert phases.index("caching latents 0/4") < phases.index("caching latents 4/4") \
            < phases.index("caching text 0/4"), seen
        assert seen["phase"][-1] == "", seen
        etas = [text for text in seen["eta"] if text]
        assert etas[0] == "estimating…", seen
        assert any(text.endswith("s") for text in etas), seen  # a figure once enough steps were measured
        assert seen["eta"][-1] == "" and page.locator("[data-eta-box]").is_hidden()  # none once completed
        log = page.locator("[data-log]").inner_text()
        starts = [log.index(line) for line in ("loading model…", "caching latents 0/4…", "caching text 0/4…",
                                                f"training 0/{STEPS}…")]
        assert starts == sorted(starts), log
        # Every step's point arrived live: the page was opened before the first one.
        assert page.locator("[data-loss-chart]").get_attribute("data-points") == str(STEPS)
        assert page.locator("[data-loss-chart]").get_attribute("data-last-step") == str(STEPS)
        assert no_horizontal_overflow(page)
        screenshot(page, f"job-live-finished-{viewport}")
        assert console.errors == []
        context.close()
