"""The shared cast: two teams, an owner, an admin, a member, a viewer, and an outsider."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from lorasite.accounts.models import ApiToken, Membership, Role, Team


class ApiClient:
    """Django's test client speaking JSON with a bearer token, like a script would."""

    def __init__(self, user):
        self.user = user
        self.token = ApiToken.issue(user, "tests")[1] if user is not None else None
        self.client = Client()

    def _headers(self, extra):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra)
        return headers

    def get(self, path, **extra):
        return self.client.get(path, **self._headers(extra))

    def delete(self, path, **extra):
        return self.client.delete(path, **self._headers(extra))

    def post(self, path, data=None, content_type="application/json", **extra):
        return self.client.post(path, data, content_type=content_type, **self._headers(extra))

    def put(self, path, data=None, **extra):
        return self.client.put(path, data, content_type="application/json", **self._headers(extra))

    def patch(self, path, data=None, **extra):
        return self.client.patch(path, data, content_type="application/json", **self._headers(extra))


def make_user(username: str):
    user = get_user_model().objects.create_user(username=username, password=f"{username}-pass-123")
    return user


@pytest.fixture
def team_a(db):
    return Team.objects.create(slug="alpha", name="Alpha")


@pytest.fixture
def team_b(db):
    return Team.objects.create(slug="bravo", name="Bravo")


def _member(team, username, role):
    user = make_user(username)
    Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture
def owner(team_a):
    return _member(team_a, "olivia", Role.OWNER)


@pytest.fixture
def admin_user(team_a):
    return _member(team_a, "adam", Role.ADMIN)


@pytest.fixture
def member(team_a):
    return _member(team_a, "mia", Role.MEMBER)


@pytest.fixture
def viewer(team_a):
    return _member(team_a, "victor", Role.VIEWER)


@pytest.fixture
def outsider(team_b):
    """A member of team B: authenticated, but must see nothing of team A."""
    return _member(team_b, "oscar", Role.OWNER)


@pytest.fixture
def api_for():
    return ApiClient
