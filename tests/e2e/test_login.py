"""A newcomer signs in to the seeded demo and sees their team dashboard, live."""

from __future__ import annotations

from tests.e2e.conftest import run_manage
from tests.services import production_env


def test_demo_user_signs_in_and_sees_the_live_dashboard(browser, live_server_url, screenshot):
    # Seeded by the real command in a production-style process, so the password hasher is the real one.
    assert "demo login" in run_manage("seed_demo", env=production_env())
    context = browser.new_context()
    page = context.new_page()
    page.goto(live_server_url + "/")
    assert "/accounts/login/" in page.url
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("That username and password do not match")
    page.get_by_label("Password").fill("lorasite-demo")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/teams/demo/")
    assert page.get_by_role("heading", level=1).inner_text().startswith("Demo team")
    # The dashboard's websocket connected through daphne and the team consumer.
    page.locator("[data-live-state].live").wait_for(timeout=10_000)
    screenshot(page, "foundation-dashboard")
    context.close()


def test_signed_out_browser_is_sent_to_login(browser, live_server_url):
    context = browser.new_context()
    page = context.new_page()
    page.goto(live_server_url + "/teams/demo/")
    assert "/accounts/login/" in page.url
    context.close()
