"""Security headers: a Content-Security-Policy that runs only our own scripts on every response,
no inline script or handler left in a template for it to block, and HSTS behind a TLS proxy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client, override_settings

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


@pytest.mark.django_db
def test_every_page_and_api_answer_carries_the_policy(owner, dataset_a, team_a):
    browser = Client()
    browser.force_login(owner)
    paths = ["/accounts/login/", f"/teams/{team_a.slug}/", f"/teams/{team_a.slug}/datasets/",
             f"/teams/{team_a.slug}/datasets/{dataset_a.uuid}/", f"/teams/{team_a.slug}/datasets/{dataset_a.uuid}/review/",
             f"/teams/{team_a.slug}/train/", f"/teams/{team_a.slug}/settings/", "/settings/tokens/", "/api/docs",
             "/api/datasets", "/healthz", "/no/such/page/"]
    for path in paths:
        response = browser.get(path)
        assert response.status_code in (200, 404, 503), (path, response.status_code)
        policy = directives(response.headers["Content-Security-Policy"])
        assert policy["script-src"] == ["'self'"], path  # no inline script, no other origin, no eval
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"], path
        assert policy["base-uri"] == ["'self'"] and policy["form-action"] == ["'self'"], path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["Referrer-Policy"] == "same-origin", path


def test_no_template_has_an_inline_script_or_event_handler():
    """The policy would block them: each behaviour lives in a static script instead."""
    handler = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
    javascript_url = re.compile(r"(href|src|action)\s*=\s*[\"']\s*javascript:", re.IGNORECASE)
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        for pattern in (handler, inline_script, javascript_url):
            found += [f"{path.relative_to(TEMPLATES)}: {m.group(0)[:80]}" for m in pattern.finditer(text)]
    assert not found, found


@pytest.mark.django_db
def test_behind_a_tls_proxy_browsers_are_told_to_stay_on_https():
    with override_settings(SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"), SECURE_HSTS_SECONDS=31536000):
        secure = Client().get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
        plain = Client().get("/accounts/login/")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    # Never over plain HTTP (a browser ignores it there, and the embedded demo is plain HTTP).
    assert "Strict-Transport-Security" not in plain.headers
