"""A job page survives a server restart: the websocket reconnects with backoff and re-syncs from the
snapshot, so progress made while it was down shows without a reload."""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model
from django.test import override_settings

from lorasite.accounts.models import Membership, Role, Team
from tests.conftest import make_dataset
from tests.e2e.browsing import wait_for_js
from tests.services import (
    bin_path,
    free_port,
    production_env,
    require_redis,
    start_process,
    stop_process,
    wait_for_port,
)
from training_app.services import submit_job

PASSWORD = "browser-pass-123"


def test_job_page_reconnects_and_resyncs_after_a_server_restart(browser, transactional_db, settings, tiny_base_model,
                                                                 screenshot):
    redis_url = require_redis()
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        maya = get_user_model().objects.create_user("maya", password=PASSWORD)
    team = Team.objects.create(slug="alpha", name="Alpha")
    Membership.objects.create(team=team, user=maya, role=Role.MEMBER)
    dataset = make_dataset(team, maya)
    job = submit_job(maya, dataset_id=dataset.uuid, base_model="tiny-sd15",
                     config={"resolution": 64, "max_steps": 100000, "batch_size": 2, "rank": 4})
    tag = uuid.uuid4().hex[:8]
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-e2e-{tag}",
                         CHANNEL_LAYER_PREFIX=f"lorasite-e2e-{tag}", ALLOWED_HOSTS="127.0.0.1", SERVE_STATIC="true",
                         LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR), OMP_NUM_THREADS="1",
                         # The job was sent to this test process's in-memory broker, i.e. its message is
                         # lost for the real worker: the worker's reconciler must find and re-send it.
                         WORKER_CHECKIN_SECONDS="1", JOB_REDISPATCH_AFTER_SECONDS="1")
    port = free_port()
    daphne = [bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"]
    web = start_process(daphne, env)
    worker = start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                            "--queues", "gpu", "default"], env)
    try:
        wait_for_port(port, web)
        base = f"http://127.0.0.1:{port}"
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/accounts/login/")
        page.get_by_label("Username").fill("maya")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/teams/alpha/")
        page.goto(f"{base}/teams/alpha/jobs/{job.uuid}/")
        wait_for_js(page, "Number(document.querySelector('[data-step]').textContent) > 0", timeout=90_000)

        stop_process(web)
        page.locator("[data-live-state]", has_text="reconnecting").wait_for(timeout=10_000)
        before = int(page.locator("[data-step]").inner_text())
        web = start_process(daphne, env)
        wait_for_port(port, web)
        page.locator("[data-live-state].live").wait_for(timeout=40_000)
        # The snapshot after reconnecting brings the steps trained while the server was away.
        wait_for_js(page, f"Number(document.querySelector('[data-step]').textContent) > {before}", timeout=30_000)
        # ...and the chart holds every point up to the step shown before the restart, not only those
        # streamed since. (Points are streamed at once but written about once a second, so they are
        # counted now, not when the server stopped: by now the worker has written them.)
        chart = page.locator("[data-loss-chart]")
        stored = job.loss_points.filter(step__lte=before).count()
        assert stored == before
        assert int(chart.get_attribute("data-points")) >= stored
        assert int(chart.get_attribute("data-last-step")) > before
        page.set_viewport_size({"width": 390, "height": 844})
        screenshot(page, "job-page-phone")
        context.close()
    finally:
        from training_app import lifecycle

        lifecycle.request_cancel(job.pk)
        stop_process(worker, timeout=20)
        stop_process(web)
