"""The new-training form suggests resolutions that fit: the dataset's own, then its base model's family's."""

from __future__ import annotations

from tests.e2e.conftest import run_manage
from tests.services import production_env


def test_resolution_suggestions_follow_the_dataset_and_the_family(browser, live_server_url, screenshot):
    run_manage("seed_demo", env=production_env())
    errors = []
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(live_server_url + "/accounts/login/")
        page.get_by_label("Username").fill("demo")
        page.get_by_label("Password").fill("lorasite-demo")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/teams/demo/")
        page.goto(live_server_url + "/teams/demo/train/")
        page.get_by_label("Dataset").select_option(label="demo-shapes")
        options = page.locator("#resolution-choices option")
        page.get_by_label("Base model").select_option("tiny-sd15")
        assert options.evaluate_all("os => os.map(o => Number(o.value))") == [64, 512, 768]
        assert page.locator('[data-key="resolution"]').input_value() == "64"
        page.get_by_label("Base model").select_option("tiny-sdxl")
        assert options.evaluate_all("os => os.map(o => Number(o.value))") == [64, 1024, 768, 896]
        screenshot(page, f"training-form-{width}")
        context.close()
    assert not errors, errors
