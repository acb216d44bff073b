"""Shared steps of the job page browser tests: a cast, signing in at a given width, jobs with stored
curves, and a watch on the JavaScript console (no page may log an error)."""

from __future__ import annotations

import math
import random
import time

from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone

from lorasite.accounts.models import Membership, Role, Team
from tests.conftest import make_dataset
from training_app import lifecycle
from training_app.models import LossPoint
from training_app.services import submit_job

PASSWORD = "browser-pass-123"


def wait_for_js(page, expression: str, arg=None, timeout: float = 30_000, interval: float = 0.1):
    """`page.wait_for_function` without eval in the page. Playwright's in-page polling evaluates the
    predicate with eval, which the portal's Content-Security-Policy refuses (no 'unsafe-eval', as it
    should); `page.evaluate` goes through the DevTools protocol, which a page's policy does not govern.
    A predicate that throws (an element not there yet) counts as not true yet."""
    deadline = time.monotonic() + timeout / 1000
    last_error = None
    while True:
        try:
            value = page.evaluate(expression, arg)
            last_error = None
        except Exception as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout:.0f} ms: {expression}" +
                               (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}


def cast():
    """maya, a member of team alpha, with a dataset of four drawn shapes."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"]):
        maya = get_user_model().objects.create_user("maya", password=PASSWORD)
    team = Team.objects.create(slug="alpha", name="Alpha")
    Membership.objects.create(team=team, user=maya, role=Role.MEMBER)
    return maya, team, make_dataset(team, maya)


class ConsoleWatch:
    """Every console error and uncaught exception of the pages of a browser context."""

    def __init__(self, context):
        self.errors: list[str] = []
        context.on("page", self.watch)
        for page in context.pages:
            self.watch(page)

    def watch(self, page) -> None:
        page.on("console", lambda message: self.errors.append(f"{page.url}: {message.text}")
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))


def sign_in(browser, base: str, viewport: str = "desktop", username: str = "maya"):
    """A new browser context at `viewport` width, signed in; returns (context, page, console watch)."""
    context = browser.new_context(viewport=VIEWPORTS[viewport], accept_downloads=True)
    watch = ConsoleWatch(context)
    page = context.new_page()
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/teams/*/")
    return context, page, watch


def finished_job(user, dataset, name: str, steps: int = 60, seed: int = 1, lr: float = 3e-4):
    """A completed job with a stored loss curve (falling from ~0.3 to ~0.05, noisy), trained by nobody:
    for pages that show finished runs."""
    job = submit_job(user, dataset_id=dataset.uuid, base_model="tiny-sd15", name=name,
                     config={"resolution": 64, "max_steps": steps, "learning_rate": lr, "rank": 4})
    lifecycle.claim(job.pk, "browser-test")
    rng = random.Random(seed)
    now = timezone.now()
    losses = [0.05 + 0.25 * math.exp(-step / (steps / 4)) + rng.random() * 0.03 for step in range(1, steps + 1)]
    LossPoint.objects.bulk_create([LossPoint(job=job, step=step, loss=loss, lr=lr, at=now)
                                   for step, loss in enumerate(losses, start=1)])
    return lifecycle.complete(job.pk, step=steps, total_steps=steps, loss=losses[-1], avg_loss=losses[-1], lr=lr)


def no_horizontal_overflow(page) -> bool:
    """The page is no wider than the window (nothing to scroll sideways at this width)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def wait_for_status(page, status: str, job, timeout: float = 60_000) -> None:
    """Wait until the job page's badge says `status`; on timeout, say what the page and the job row say."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from training_app.models import TrainingJob

    try:
        page.locator("[data-status]", has_text=status).wait_for(timeout=timeout)
    except PlaywrightTimeout:
        row = TrainingJob.objects.get(pk=job.pk)
        raise AssertionError(
            f"the page says {page.locator('[data-status]').inner_text()!r} "
            f"({page.locator('[data-live-state]').inner_text()}), the job row {row.status!r} at step {row.step}, "
            f"attempts {row.attempts}, error {row.error!r}; last log lines {list(row.logs.values_list('line', flat=True))[-5:]}"
        ) from None
