"""Operator commands whose names and output scripts rely on."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from lorasite.accounts.models import ApiToken, Membership

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_team_creates_owner_without_usable_password():
    assert run("create_team", "vision", "--owner", "ana") == "created team vision (owner ana)\n"
    ana = get_user_model().objects.get(username="ana")
    assert not ana.has_usable_password()
    assert Membership.objects.get(team__slug="vision", user=ana).role == "owner"


def test_create_team_is_idempotent_and_adds_members_with_roles():
    run("create_team", "vision", "--owner", "ana")
    out = run("create_team", "vision", "--owner", "ana", "--member", "ben", "--role", "viewer", "--member", "cy")
    assert out.splitlines() == ["exists team vision (owner ana)", "member ben role viewer", "member cy role member"]
    roles = dict(Membership.objects.filter(team__slug="vision").values_list("user__username", "role"))
    assert roles == {"ana": "owner", "ben": "viewer", "cy": "member"}


def test_create_team_rejects_a_bad_slug():
    with pytest.raises(CommandError, match="not a valid slug"):
        run("create_team", "Bad Slug", "--owner", "ana")


def test_create_api_token_prints_only_a_working_token():
    run("create_team", "vision", "--owner", "ana")
    out = run("create_api_token", "ana")
    raw = out.strip()
    assert out == raw + "\n" and raw.startswith("lst_")
    assert ApiToken.objects.filter(user__username="ana").count() == 1
    response = Client().get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.json()["teams"][0]["slug"] == "vision"


def test_create_api_token_for_unknown_user_fails_clearly():
    with pytest.raises(CommandError, match="no user called 'ghost'"):
        run("create_api_token", "ghost")


def test_seed_demo_twice_is_safe_and_lets_the_demo_user_log_in():
    first = run("seed_demo")
    second = run("seed_demo")
    assert "demo login: username 'demo', password 'lorasite-demo'" in first
    assert first.splitlines()[-1] == second.splitlines()[-1]
    assert Membership.objects.filter(team__slug="demo").count() == 1
    browser = Client()
    assert browser.login(username="demo", password="lorasite-demo")
    assert browser.get("/", follow=True).status_code == 200
