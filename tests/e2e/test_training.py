"""The whole loop in a browser against daphne + a real dramatiq worker + Redis: upload a dataset,
start a training from the form, watch it live, download the LoRA, cancel another run; another
team's browser sees none of it. Screenshots go to test-output/screenshots/."""

from __future__ import annotations

import io
import struct
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from PIL import Image, ImageDraw

from lorasite.accounts.models import Membership, Role, Team
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
from training_app.models import JobStatus, TrainingJob

PASSWORD = "browser-pass-123"


@pytest.fixture
def portal(transactional_db, settings, tiny_base_model):
    """daphne (production settings, Redis channel layer) and one dramatiq worker on the gpu queue."""
    redis_url = require_redis()
    tag = uuid.uuid4().hex[:8]
    env = production_env(REDIS_URL=redis_url, DRAMATIQ_NAMESPACE=f"lorasite-e2e-{tag}",
                         CHANNEL_LAYER_PREFIX=f"lorasite-e2e-{tag}", ALLOWED_HOSTS="127.0.0.1,localhost",
                         SERVE_STATIC="true", LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR),
                         WORKER_CHECKIN_SECONDS="2", OMP_NUM_THREADS="1")
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"], env)
    worker = start_process([bin_path("dramatiq"), "lorasite.worker", "--processes", "1", "--threads", "1",
                            "--queues", "gpu", "default"], env)
    try:
        wait_for_port(port, web)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in (worker, web):
            log = stop_process(process, timeout=15)
            if "Traceback" in log:
                print(log)


def cast():
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        User = get_user_model()
        maya = User.objects.create_user("maya", password=PASSWORD)
        otto = User.objects.create_user("otto", password=PASSWORD)
    alpha = Team.objects.create(slug="alpha", name="Alpha")
    bravo = Team.objects.create(slug="bravo", name="Bravo")
    Membership.objects.create(team=alpha, user=maya, role=Role.MEMBER)
    Membership.objects.create(team=bravo, user=otto, role=Role.OWNER)


def sign_in(browser, base, username):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/teams/*/")
    return context, page


def shape(i: int) -> bytes:
    img = Image.new("RGB", (96, 96), [(30, 60, 160), (200, 60, 40), (40, 150, 80), (230, 190, 40)][i % 4])
    ImageDraw.Draw(img).ellipse([10 + i * 8, 20, 60 + i * 8, 70], fill=(250, 250, 250))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def fill_form(page, dataset_name, **values):
    page.get_by_label("Dataset").select_option(label=dataset_name)
    page.get_by_label("Preset").select_option("fast")
    for key, value in values.items():
        field = page.locator(f'[data-key="{key}"]')
        if not field.is_visible():
            field.locator("xpath=ancestor::details").locator("summary").click()
        field.fill(str(value))


def test_a_member_trains_from_the_browser_and_an_outsider_sees_nothing(browser, portal, screenshot, tmp_path):
    cast()
    context, page = sign_in(browser, portal, "maya")

    # A dataset, uploaded through the page's file picker.
    page.locator(".team-nav").get_by_role("link", name="Datasets").click()
    page.get_by_label("Name", exact=True).fill("Shapes")
    page.get_by_label("Trigger word").fill("shp")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url("**/teams/alpha/datasets/*/")
    names = []
    for i in range(4):
        (tmp_path / f"s{i}.png").write_bytes(shape(i))
        (tmp_path / f"s{i}.txt").write_text(f"shp, a white circle number {i}")
        names += [str(tmp_path / f"s{i}.png"), str(tmp_path / f"s{i}.txt")]
    page.locator("[data-file-input]").set_input_files(names)
    page.locator("[data-summary-added]", has_text="4 added").wait_for(timeout=20_000)

    # The form: preset, a few edits, a live estimate, then submit.
    page.locator(".team-nav").get_by_role("link", name="New training").click()
    page.get_by_label("Base model").select_option("tiny-sd15")
    # The form starts from the dataset's own settings.
    wait_for_js(page, "document.querySelector('[data-key=\"trigger_word\"]').value === 'shp'")
    assert page.locator('[data-key="resolution"]').input_value() == "512"
    fill_form(page, "Shapes", resolution=64, max_steps=150, batch_size=2, sample_every_n_steps=75,
              sample_prompts="shp, a white circle", learning_rate="0.003")
    page.locator('[data-est="total_steps"]', has_text="150").wait_for(timeout=10_000)
    screenshot(page, "new-training-form")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url("**/teams/alpha/jobs/*/")
    job = TrainingJob.objects.get()

    # Live: the step counter and the chart move without a reload, the sample appears, it completes.
    wait_for_js(page, "Number(document.querySelector('[data-step]').textContent) > 0", timeout=90_000)
    first_seen = int(page.locator("[data-step]").inner_text())
    points_then = int(page.locator("[data-loss-chart]").get_attribute("data-points") or 0)
    wait_for_js(page, f"Number(document.querySelector('[data-step]').textContent) > {first_seen}", timeout=60_000)
    # The chart grows from the live messages, not from a reload.
    wait_for_js(page, f"Number(document.querySelector('[data-loss-chart]').dataset.points) > {points_then}",
                           timeout=60_000)
    page.locator("[data-status]", has_text="completed").wait_for(timeout=120_000)
    assert page.locator("[data-loss-chart] canvas").count() == 1
    page.locator("[data-samples] img").first.wait_for(timeout=10_000)
    link = page.get_by_role("link", name="Download kohya / A1111 / ComfyUI")
    with page.expect_download() as download_info:
        link.click()
    path = download_info.value.path()
    data = open(path, "rb").read()
    header_len = struct.unpack("<Q", data[:8])[0]
    assert b"ss_network_dim" in data[8:8 + header_len]
    screenshot(page, "finished-job")

    # A second run, cancelled from its page while it trains.
    page.goto(portal + "/teams/alpha/train/")
    page.get_by_label("Base model").select_option("tiny-sd15")
    fill_form(page, "Shapes", resolution=64, max_steps=100000, batch_size=2)
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url("**/teams/alpha/jobs/*/")
    page.locator("[data-status]", has_text="running").wait_for(timeout=60_000)
    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel this training?"
    page.get_by_role("button", name="Cancel").click()
    page.locator("[data-status]", has_text="cancelled").wait_for(timeout=60_000)
    second = TrainingJob.objects.exclude(pk=job.pk).get()
    assert second.status == JobStatus.CANCELLED

    page.goto(portal + "/teams/alpha/")
    page.locator("[data-live-state].live").wait_for(timeout=10_000)
    assert page.locator("#recent-h").is_visible() and page.locator("tr[data-job]").count() == 2
    screenshot(page, "dashboard")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "dashboard-dark")

    # Another team's browser: nothing of it, anywhere.
    other, other_page = sign_in(browser, portal, "otto")
    assert other_page.goto(f"{portal}/teams/alpha/jobs/{job.uuid}/").status == 404
    assert other_page.goto(f"{portal}/teams/alpha/").status == 404
    assert other_page.goto(f"{portal}/api/jobs/{job.uuid}/weights?layout=kohya").status == 404
    other_page.goto(f"{portal}/teams/bravo/")
    assert "Nothing is training right now." in other_page.content() and "Shapes" not in other_page.content()
    other.close()
    context.close()
