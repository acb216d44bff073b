"""A member starts a training on the team's ComfyUI server from the form, in a browser, against daphne +
a real dramatiq worker on the `remote` queue + the loopback ComfyUI fake, and downloads the LoRA."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from tests.conftest import make_dataset
from tests.e2e.browsing import wait_for_js
from tests.e2e.test_training import cast, fill_form, sign_in
from tests.fakes.comfyui_server import FakeComfyUI
from tests.services import (
    bin_path,
    free_port,
    production_env,
    require_redis,
    start_process,
    stop_process,
    wait_for_port,
)


@pytest.fixture
def remote_portal(transactional_db, settings, tiny_base_model):
    redis_url = require_redis()
    tag = uuid.uuid4().hex[:8]
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-e2e-{tag}",
                         CHANNEL_LAYER_PREFIX=f"lorasite-e2e-{tag}", ALLOWED_HOSTS="127.0.0.1,localhost",
                         SERVE_STATIC="true", LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR),
                         WORKER_CHECKIN_SECONDS="2", OMP_NUM_THREADS="1")
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"], env)
    worker = start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                            "--queues", "remote", "default"], env)
    try:
        with FakeComfyUI(Path(tiny_base_model.location) / "unet") as comfy:
            wait_for_port(port, web)
            yield f"http://127.0.0.1:{port}", comfy
    finally:
        for process in (worker, web):
            log = stop_process(process, timeout=15)
            if "Traceback" in log:
                print(log)


def test_a_member_starts_a_comfyui_training_from_the_form(browser, remote_portal, screenshot):
    base, comfy = remote_portal
    comfy.behaviour.step_seconds = 0.1
    cast()
    from django.contrib.auth import get_user_model

    from lorasite.accounts.models import Team

    make_dataset(Team.objects.get(slug="alpha"), get_user_model().objects.get(username="maya"), name="Shapes")
    call_command("add_backend", "desk-comfy", "--team", "alpha", "--type", "comfyui", "--base-url", comfy.url,
                 "--option", "checkpoints.tiny-sd15=v1-5-pruned-emaonly.safetensors", stdout=io.StringIO())
    context, page = sign_in(browser, base, "maya")
    page.goto(base + "/teams/alpha/train/")
    page.get_by_label("Base model").select_option("tiny-sd15")
    page.get_by_label("Backend").select_option("desk-comfy")
    fill_form(page, "Shapes", resolution=64, max_steps=30, batch_size=1)
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url("**/teams/alpha/jobs/*/")
    wait_for_js(page, "Number(document.querySelector('[data-step]').textContent) > 0", timeout=60_000)
    page.locator("[data-status]", has_text="completed").wait_for(timeout=120_000)
    screenshot(page, "remote-comfyui-job")
    link = page.get_by_role("link", name="Download kohya / A1111 / ComfyUI")
    with page.expect_download() as download_info:
        link.click()
    assert download_info.value.suggested_filename.endswith(".safetensors")
    assert len(comfy.prompts_received) == 1
    context.close()
