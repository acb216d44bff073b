"""Access checks for HTML pages: the same rules as the API, answered the way Django pages answer
(a missing or other team's object is a 404 page, a role too low is a 403 page with the reason)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404

from lorasite.accounts import access
from lorasite.accounts.models import Role, Team
from lorasite.errors import NotFound, PermissionDenied


@contextmanager
def page_errors(missing: str = "Not found") -> Iterator[None]:
    try:
        yield
    except NotFound:
        raise Http404(missing) from None
    except PermissionDenied as exc:
        raise DjangoPermissionDenied(exc.message) from None


def team_for_page(user, slug: str, needed: Role = Role.VIEWER) -> Team:
    with page_errors("Team not found"):
        return access.get_team(user, slug, needed=needed)
