"""Team visibility and roles through the team endpoints and pages."""

from __future__ import annotations

import pytest
from django.test import Client

from lorasite.accounts import access
from lorasite.accounts.models import Membership, Role
from lorasite.errors import NotFound, PermissionDenied

pytestmark = pytest.mark.django_db


def test_outsider_gets_404_for_team_members(api_for, owner, outsider):
    response = api_for(outsider).get("/api/teams/alpha/members")
    assert response.status_code == 404
    assert response.json() == {"detail": "Team not found."}


def test_other_teams_and_missing_teams_look_the_same(api_for, owner, outsider):
    other = api_for(outsider).get("/api/teams/alpha/members")
    missing = api_for(outsider).get("/api/teams/no-such-team/members")
    assert (other.status_code, other.json()) == (missing.status_code, missing.json())


@pytest.mark.parametrize("method", ["put", "delete"])
def test_outsider_cannot_change_members(api_for, owner, outsider, method):
    api = api_for(outsider)
    if method == "put":
        response = api.put("/api/teams/alpha/members", {"username": "oscar", "role": "owner"})
    else:
        response = api.delete("/api/teams/alpha/members/olivia")
    assert response.status_code == 404
    assert not Membership.objects.filter(team__slug="alpha", user=outsider).exists()
    assert Membership.objects.filter(team__slug="alpha", user=owner).exists()


def test_viewer_can_read_members_but_not_write(api_for, owner, viewer):
    api = api_for(viewer)
    assert api.get("/api/teams/alpha/members").status_code == 200
    response = api.put("/api/teams/alpha/members", {"username": "newbie", "role": "member"})
    assert response.status_code == 403
    assert "viewer" in response.json()["detail"]


def test_member_cannot_manage_members(api_for, member):
    assert api_for(member).put("/api/teams/alpha/members", {"username": "x", "role": "viewer"}).status_code == 403


def test_admin_adds_a_member_but_cannot_create_owners(api_for, owner, admin_user):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("newbie")
    api = api_for(admin_user)
    added = api.put("/api/teams/alpha/members", {"username": "newbie", "role": "member"})
    assert added.status_code == 200 and added.json()["role"] == "member"
    assert api.put("/api/teams/alpha/members", {"username": "newbie", "role": "owner"}).status_code == 403
    assert api.delete("/api/teams/alpha/members/olivia").status_code == 403


def test_last_owner_cannot_be_removed_or_demoted(api_for, owner):
    api = api_for(owner)
    response = api.put("/api/teams/alpha/members", {"username": "olivia", "role": "admin"})
    assert response.status_code == 422
    assert "at least one owner" in response.json()["detail"]
    assert api.delete("/api/teams/alpha/members/olivia").status_code == 422


def test_bad_role_is_422(api_for, owner):
    assert api_for(owner).put("/api/teams/alpha/members", {"username": "x", "role": "god"}).status_code == 422


def test_visible_narrows_querysets_to_the_users_teams(owner, outsider, team_a, team_b):
    from lorasite.accounts.models import Team

    assert list(access.visible(Team.objects.filter(pk__in=[team_a.pk, team_b.pk]), owner, team_field="")) == [team_a]
    assert list(access.teams_for(owner)) == [team_a]
    assert list(access.teams_for(outsider)) == [team_b]


def test_get_visible_raises_not_found_for_outsiders_and_permission_denied_for_low_roles(
    owner, viewer, outsider, team_a
):
    qs = Membership.objects.all()
    m = Membership.objects.get(user=owner)
    with pytest.raises(NotFound):
        access.get_visible(qs, outsider, pk=m.pk)
    with pytest.raises(PermissionDenied):
        access.get_visible(qs, viewer, needed=Role.ADMIN, pk=m.pk)
    assert access.get_visible(qs, owner, needed=Role.OWNER, pk=m.pk) == m
    with pytest.raises(NotFound):
        access.get_visible(qs, owner, pk="not-a-number")


def test_team_page_is_404_for_outsiders(owner, outsider):
    browser = Client()
    browser.force_login(outsider)
    assert browser.get("/teams/alpha/").status_code == 404
    browser.force_login(owner)
    page = browser.get("/teams/alpha/")
    assert page.status_code == 200 and b"Alpha" in page.content


def test_pages_require_login(db):
    response = Client().get("/teams/alpha/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(("username", "msg"), [
    ("newbie ", "must not be empty or start or end with spaces"),
    ("<b>boss</b>", "may contain only letters, digits and @ . + - _"),
    ("nobody-yet", "no such account"),
])
def test_admins_add_existing_accounts_only_and_no_look_alikes(api_for, owner, username, msg):
    from django.contrib.auth import get_user_model

    response = api_for(owner).put("/api/teams/alpha/members", {"username": username, "role": "member"})
    assert response.status_code == 422 and response.json()["errors"] == [{"loc": ["username"], "msg": msg}]
    assert not get_user_model().objects.filter(username=username).exists()
