"""`/api/docs` works on an offline install: with every request to another host blocked, Swagger UI
renders the portal's operations."""

from __future__ import annotations

from urllib.parse import urlparse


def test_api_docs_render_with_no_network_but_the_portal(browser, live_server_url, screenshot):
    context = browser.new_context()
    page = context.new_page()
    foreign, errors = [], []

    def only_the_portal(route):
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_portal)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(live_server_url + "/api/docs")
    page.locator(".opblock-summary-path", has_text="/api/jobs").first.wait_for(timeout=20_000)
    screenshot(page, "api-docs-offline")
    assert not foreign, foreign
    assert not errors, errors
    context.close()
