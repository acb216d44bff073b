"""Every page a team member meets, at desktop and 390 px width: it answers 200 under our
Content-Security-Policy, logs no JavaScript error (a CSP violation is one), has nothing to scroll
sideways, and leaves a screenshot under test-output/."""

from __future__ import annotations

import pytest

from lorasite.accounts.models import Membership, Role
from tests.e2e.browsing import cast, finished_job, no_horizontal_overflow, sign_in


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_every_page_loads_clean_at_each_width(browser, live_server_url, tiny_base_model, screenshot, viewport):
    maya, team, dataset = cast()
    # An owner sees every page (Settings and Captioners are for admins).
    Membership.objects.filter(team=team, user=maya).update(role=Role.OWNER)
    first = finished_job(maya, dataset, "portrait run", seed=1)
    second = finished_job(maya, dataset, "portrait run", seed=2)
    pages = {
        "dashboard": "/teams/alpha/",
        "datasets": "/teams/alpha/datasets/",
        "dataset": f"/teams/alpha/datasets/{dataset.uuid}/",
        "review": f"/teams/alpha/datasets/{dataset.uuid}/review/",
        "new-training": "/teams/alpha/train/",
        "job": f"/teams/alpha/jobs/{first.uuid}/",
        "compare": f"/teams/alpha/compare/?jobs={first.uuid}&jobs={second.uuid}",
        "settings": "/teams/alpha/settings/",
        "captioners": "/teams/alpha/captioners/",
        "tokens": "/settings/tokens/",
        "api-docs": "/api/docs",
    }
    context, page, watch = sign_in(browser, live_server_url, viewport)
    wide = []
    for name, path in pages.items():
        response = page.goto(live_server_url + path)
        assert response.status == 200, (name, response.status)
        assert "script-src 'self';" in response.headers["content-security-policy"], name
        page.wait_for_load_state("networkidle")
        if not no_horizontal_overflow(page):
            wide.append(name)
        screenshot(page, f"page-{name}-{viewport}")
    # What were inline handlers work under the policy: the review filter submits on change.
    page.goto(f"{live_server_url}/teams/alpha/datasets/{dataset.uuid}/review/")
    page.locator("#review-state").select_option("approved")
    page.wait_for_url("**/review/?state=approved")
    context.close()
    assert not wide, f"pages wider than the {viewport} window: {wide}"
    assert not watch.errors, watch.errors
