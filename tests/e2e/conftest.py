"""Browser tests: Debian's Chromium driven by Playwright against `manage.py serve` in a subprocess.

They run in their own pytest invocation (`-m browser`): Playwright's sync API runs an event loop in
the test thread, which cannot share a run with the asyncio tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import IN_CI, REPO, production_env, serve_portal

# Playwright's sync API keeps an event loop running in this thread; the ORM calls that set up test
# data here are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
OUTPUT_DIR = REPO / "test-output" / "screenshots"


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (make test installs it: apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def live_server_url(transactional_db):
    """The portal in embedded mode (stub broker + worker threads) on a free port, on the test database."""
    env = production_env(ALLOWED_HOSTS="127.0.0.1,localhost", SERVE_STATIC="true")
    with serve_portal(env) as portal:
        yield portal.url
    if "Traceback" in portal.log:
        print(portal.log)


@pytest.fixture
def screenshot():
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = OUTPUT_DIR / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def run_manage(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    return result.stdout
