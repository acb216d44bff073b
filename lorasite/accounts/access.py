"""The one place that decides what a user may see and do in a team.

Every query for team-owned data goes through `visible()` or `get_visible()`; an object of a team the
user is not in is reported as missing (404), never as forbidden, so its existence does not leak.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, QuerySet

from lorasite.accounts.models import Membership, Role, Team
from lorasite.errors import InvalidInput, NotFound, PermissionDenied

M = TypeVar("M", bound=Model)


def memberships(user) -> QuerySet[Membership]:
    if not getattr(user, "is_authenticated", False):
        return Membership.objects.none()
    return Membership.objects.filter(user=user).select_related("team")


def teams_for(user, min_role: Role = Role.VIEWER) -> QuerySet[Team]:
    allowed = [r for r in Role if Role(r).allows(min_role)]
    if not getattr(user, "is_authenticated", False):
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user, memberships__role__in=allowed).distinct()


def role_in(user, team: Team) -> Role | None:
    if not getattr(user, "is_authenticated", False):
        return None
    role = Membership.objects.filter(user=user, team=team).values_list("role", flat=True).first()
    return Role(role) if role else None


def require_role(user, team: Team, needed: Role, not_found: str = "Not found.") -> Role:
    """The user's role in `team` if it allows `needed`; 404 for outsiders, 403 for a lower role."""
    role = role_in(user, team)
    if role is None:
        raise NotFound(not_found)
    if not role.allows(needed):
        raise PermissionDenied(f"Your role in {team.slug} is {role.value}; this needs {Role(needed).value} or above.")
    return role


def get_team(user, ref: str | None, needed: Role = Role.VIEWER) -> Team:
    """Resolve a team by slug or UUID for this user; with no ref, the user's only team.

    A user with several teams must say which one; a team they are not in is 'not found'.
    """
    if ref:
        lookup = {"uuid": ref} if looks_like_uuid(ref) else {"slug": ref}
        team = Team.objects.filter(**lookup).first()
        if team is None:
            raise NotFound("Team not found.")
        require_role(user, team, needed, not_found="Team not found.")
        return team
    teams = list(teams_for(user)[:2])
    if not teams:
        raise NotFound("You are not a member of any team.")
    if len(teams) > 1:
        raise InvalidInput("You belong to several teams: say which one with `team`.",
                           [{"loc": ["team"], "msg": "required when you belong to several teams"}])
    require_role(user, teams[0], needed)
    return teams[0]


def visible(queryset: QuerySet[M], user, team_field: str = "team") -> QuerySet[M]:
    """Narrow `queryset` to rows of the teams the user belongs to (`team_field=""` for teams)."""
    if not getattr(user, "is_authenticated", False):
        return queryset.none()
    prefix = f"{team_field}__" if team_field else ""
    return queryset.filter(**{f"{prefix}memberships__user": user})


def get_visible(queryset: QuerySet[M], user, needed: Role = Role.VIEWER, team_field: str = "team",
                **lookup) -> M:
    """One object the user can see (404 otherwise), after checking their role allows `needed` (403)."""
    try:
        obj = visible(queryset, user, team_field).distinct().get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError, DjangoValidationError):
        # A malformed id is reported like a missing one.
        raise NotFound() from None
    team = obj
    for part in team_field.split("__"):
        team = getattr(team, part)
    require_role(user, team, needed)
    return obj


def looks_like_uuid(value: str) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
