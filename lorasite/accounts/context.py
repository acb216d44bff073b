"""Template context: the teams of the signed-in user, for the navigation bar."""

from __future__ import annotations

from lorasite.accounts import access


def teams(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_teams": []}
    return {"nav_teams": [(m.team, m.role) for m in access.memberships(user)]}
