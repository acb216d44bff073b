"""API authentication: bearer tokens for scripts, the session (with CSRF) for the browser."""

from __future__ import annotations

import pytest
from django.test import Client

from lorasite.accounts.models import ApiToken

pytestmark = pytest.mark.django_db


def test_me_lists_the_users_teams_with_roles(api_for, owner, team_a, team_b):
    from lorasite.accounts.models import Membership, Role

    Membership.objects.create(team=team_b, user=owner, role=Role.VIEWER)
    response = api_for(owner).get("/api/me")
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "olivia"
    assert {(t["slug"], t["role"]) for t in body["teams"]} == {("alpha", "owner"), ("bravo", "viewer")}
    assert all(len(t["id"]) == 36 for t in body["teams"])


def test_anonymous_request_gets_401_json(db):
    response = Client().get("/api/me")
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}


def test_unknown_and_malformed_tokens_get_401(db):
    for header in ["Bearer lst_nope", "Bearer ", "Basic abc", "Bearer " + "x" * 5000]:
        response = Client().get("/api/me", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header


def test_revoked_token_gets_401(api_for, member):
    api = api_for(member)
    assert api.get("/api/me").status_code == 200
    ApiToken.objects.get(user=member).revoke()
    response = api.get("/api/me")
    assert response.status_code == 401


def test_token_of_an_inactive_user_gets_401(api_for, member):
    api = api_for(member)
    member.is_active = False
    member.save()
    assert api.get("/api/me").status_code == 401


def test_token_is_stored_hashed_and_shown_once(api_for, member):
    api = api_for(member)
    created = api.post("/api/tokens", {"name": "uploader"})
    assert created.status_code == 201
    raw = created.json()["token"]
    assert raw.startswith("lst_") and len(raw) > 40
    stored = ApiToken.objects.get(uuid=created.json()["id"])
    assert raw not in {stored.token_hash, stored.prefix} and stored.prefix == raw[:12]
    listed = api.get("/api/tokens").json()
    assert all("token" not in item for item in listed)
    assert raw not in api.get("/api/tokens").content.decode()
    assert Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_user_cannot_revoke_someone_elses_token(api_for, member, outsider):
    victim_token, _ = ApiToken.issue(member, "mine")
    response = api_for(outsider).delete(f"/api/tokens/{victim_token.uuid}")
    assert response.status_code == 404
    victim_token.refresh_from_db()
    assert victim_token.is_active


def test_revoking_own_token_through_the_api(api_for, member):
    api = api_for(member)
    other, raw = ApiToken.issue(member, "second")
    assert api.delete(f"/api/tokens/{other.uuid}").status_code == 204
    assert Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_session_auth_works_for_reads_and_requires_csrf_for_writes(member):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(member)
    assert browser.get("/api/me").status_code == 200
    refused = browser.post("/api/tokens", {"name": "x"}, content_type="application/json")
    assert refused.status_code == 403
    browser.get("/settings/tokens/")  # sets the CSRF cookie as a page visit would
    csrf = browser.cookies["csrftoken"].value
    accepted = browser.post("/api/tokens", {"name": "x"}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert accepted.status_code == 201


def test_validation_errors_are_422_json(api_for, member):
    response = api_for(member).post("/api/tokens", {"name": ""})
    assert response.status_code == 422
    assert "detail" in response.json()


def test_openapi_docs_are_served_from_our_own_static_files(db):
    import re

    page = Client().get("/api/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.content.decode())
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    assert not [a for a in assets if "//" in a], "the docs page loads assets from another host"
    schema = Client().get("/api/openapi.json").json()
    assert "/api/me" in schema["paths"]


def _write_operations():
    import re
    import uuid

    schema = Client().get("/api/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            # Signed callbacks from other services (Replicate's webhooks) carry no user: they check their
            # signature instead, and have their own tests.
            if method in ("post", "put", "patch", "delete") and operation.get("security"):
                filled = re.sub(r"\{[^}]*\}", lambda m: "alpha" if m.group(0) in ("{team}", "{slug}")
                                else ("someone" if m.group(0) == "{username}" else str(uuid.uuid4())), path)
                yield method, filled


def test_every_anonymous_write_gets_401_not_a_csrf_403(db):
    client = Client(enforce_csrf_checks=True)
    operations = list(_write_operations())
    assert len(operations) >= 19
    answers = {f"{m.upper()} {p}": getattr(client, m)(p, "{}", content_type="application/json").status_code
               for m, p in operations}
    assert set(answers.values()) == {401}, {k: v for k, v in answers.items() if v != 401}


def test_a_signed_in_browser_write_without_its_csrf_token_is_still_refused(member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(member)
    response = client.post("/api/tokens", {"name": "x"}, content_type="application/json")
    assert response.status_code == 403


def test_repeated_bad_tokens_from_one_address_get_429_but_a_good_token_still_works(api_for, member, settings):
    from django.core.cache import cache

    cache.clear()
    settings.AUTH_FAILURES_PER_MINUTE = 3
    client = Client()
    codes = [client.get("/api/me", HTTP_AUTHORIZATION="Bearer lst_guess" + str(i)).status_code for i in range(5)]
    assert codes == [401, 401, 429, 429, 429]
    assert api_for(member).get("/api/me").status_code == 200
    cache.clear()


def test_repeated_bad_passwords_get_429_before_the_password_is_checked(member, settings):
    from django.core.cache import cache

    cache.clear()
    settings.AUTH_FAILURES_PER_MINUTE = 3
    member.set_password("right-password-1")
    member.save()
    client = Client()
    codes = [client.post("/accounts/login/", {"username": member.username, "password": "wrong"}).status_code
             for _ in range(3)]
    assert codes == [200, 200, 200]  # the form again, with its error
    refused = client.post("/accounts/login/", {"username": member.username, "password": "right-password-1"})
    assert refused.status_code == 429 and b"Too many failed sign-ins" in refused.content
    assert "_auth_user_id" not in client.session
    cache.clear()
    assert client.post("/accounts/login/", {"username": member.username, "password": "right-password-1"}
                       ).status_code == 302
