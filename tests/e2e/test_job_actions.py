"""The job page's buttons act in place, at desktop and phone width: Sample now and Save now answer
without a reload and their message gives way to the result; Cancel asks first; a cancelled job shows
no ETA; Retry runs it again with Attempts updating live; the download list reads the same after a
live update as on a fresh load. No console error on either page."""

from __future__ import annotations

import re

from tests.e2e.browsing import cast, no_horizontal_overflow, sign_in, wait_for_js, wait_for_status
from training_app.models import JobStatus, TrainingJob
from training_app.services import submit_job

# Every value the Attempts field takes, in order.
RECORD_ATTEMPTS = """() => {
  const el = document.querySelector("[data-attempts]");
  window.attempts = [el.textContent];
  new MutationObserver(() => window.attempts.push(el.textContent))
    .observe(el, {childList: true, characterData: true, subtree: true});
}"""


def files_text(page) -> list[str]:
    return [" ".join(text.split()) for text in page.locator("[data-files] li").all_inner_texts()]


def test_buttons_act_in_place_and_the_page_stays_true(browser, live_server_url, tiny_base_model, screenshot):
    maya, _team, dataset = cast()
    job = submit_job(maya, dataset_id=dataset.uuid, base_model="tiny-sd15", name="long-shapes",
                     config={"resolution": 64, "max_steps": 100_000, "batch_size": 1, "rank": 4})
    desktop_context, desktop, desktop_console = sign_in(browser, live_server_url, "desktop")
    phone_context, phone, phone_console = sign_in(browser, live_server_url, "phone")
    for page in (desktop, phone):
        page.goto(f"{live_server_url}/teams/alpha/jobs/{job.uuid}/")
        # Survives only as long as the page is not reloaded.
        page.evaluate("window.notReloaded = true")
    wait_for_js(desktop, "Number(document.querySelector('[data-step]').textContent) > 0", timeout=180_000)

    # Sample now (desktop): a message at once, then the sample itself, and the message says so.
    desktop.get_by_role("button", name="Sample now").click()
    message = desktop.locator("[data-action-message]")
    message.filter(has_text="The trainer will sample at its next step.").wait_for(timeout=5_000)
    desktop.locator("[data-samples] img").first.wait_for(timeout=60_000)
    message.filter(has_text="added below").wait_for(timeout=5_000)
    screenshot(desktop, "job-sampled-desktop")
    message.filter(has_text="added below").wait_for(state="hidden", timeout=15_000)  # not left standing

    # Save now (phone): the files appear live, listed exactly as a fresh load lists them.
    phone.get_by_role("button", name="Save now").click()
    phone.locator("[data-action-message]", has_text="The trainer will save at its next step.").wait_for(timeout=5_000)
    phone.get_by_role("link", name="Download kohya / A1111 / ComfyUI").wait_for(timeout=60_000)
    phone.get_by_role("link", name="Download diffusers").wait_for(timeout=10_000)
    phone.locator("[data-action-message]", has_text="saved").wait_for(timeout=5_000)
    live_files = files_text(phone)
    fresh = phone_context.new_page()
    fresh.goto(f"{live_server_url}/teams/alpha/jobs/{job.uuid}/")
    assert files_text(fresh) == live_files and len(live_files) == 2, (live_files, files_text(fresh))
    assert "kohya" in live_files[0] and " KB" in live_files[0] and "-diffusers.safetensors" in live_files[1]
    fresh.close()
    assert no_horizontal_overflow(phone)
    screenshot(phone, "job-saved-phone")

    # Cancel asks first: dismissed, nothing happens; accepted, it is cancelled in place.
    phone.once("dialog", lambda dialog: dialog.dismiss())
    phone.get_by_role("button", name="Cancel").click()
    phone.wait_for_timeout(500)
    assert TrainingJob.objects.get(pk=job.pk).status == JobStatus.RUNNING
    phone.once("dialog", lambda dialog: dialog.accept())
    phone.get_by_role("button", name="Cancel").click()
    for page in (phone, desktop):
        wait_for_status(page, "cancelled", job)
        assert page.locator("[data-eta-box]").is_hidden()  # a cancelled job has no ETA
        assert page.get_by_role("button", name="Retry").is_visible()
        assert not page.get_by_role("button", name="Sample now").is_visible()
    phone.locator("[data-action-message]", has_text="Cancelled.").wait_for(timeout=5_000)
    assert phone.locator("[data-attempts]").inner_text() == "1"
    screenshot(phone, "job-cancelled-phone")

    # Retry (desktop): back in the queue, running again; Attempts follows without a reload.
    desktop.evaluate(RECORD_ATTEMPTS)
    desktop.get_by_role("button", name="Retry").click()
    # "Back in the queue", then "Running again" once a worker has it (which may be at once).
    desktop.locator("[data-action-message]", has_text=re.compile("Back in the queue|Running again")).wait_for(
        timeout=5_000)
    for page in (desktop, phone):
        wait_for_status(page, "running", job)
    wait_for_js(desktop, "window.attempts[window.attempts.length - 1] === '1'", timeout=10_000)
    assert "0" in desktop.evaluate("window.attempts")
    assert phone.locator("[data-attempts]").inner_text() == "1"
    screenshot(desktop, "job-retried-desktop")

    desktop.once("dialog", lambda dialog: dialog.accept())
    desktop.get_by_role("button", name="Cancel").click()
    wait_for_status(desktop, "cancelled", job)
    for page in (desktop, phone):
        assert page.evaluate("window.notReloaded") is True
    assert desktop_console.errors == [] and phone_console.errors == []
    desktop_context.close()
    phone_context.close()
