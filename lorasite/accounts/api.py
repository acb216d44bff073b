"""/api/me, team members and API tokens."""

from __future__ import annotations

from uuid import UUID

from django.shortcuts import get_object_or_404
from ninja import Router, Status

from lorasite.accounts import access
from lorasite.accounts.models import ApiToken, Membership, Role
from lorasite.accounts.schemas import (
    MemberIn,
    MemberOut,
    MeOut,
    TeamRoleOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
)
from lorasite.accounts.services import remove_membership, set_membership

router = Router(tags=["accounts"])


@router.get("/me", response=MeOut)
def me(request):
    teams = [
        TeamRoleOut(id=m.team.uuid, slug=m.team.slug, name=m.team.name, role=m.role)
        for m in access.memberships(request.user)
    ]
    user = request.user
    return MeOut(username=user.username, email=user.email, is_staff=user.is_staff, teams=teams)


@router.get("/teams/{team}/members", response=list[MemberOut])
def list_members(request, team: str):
    team_obj = access.get_team(request.user, team)
    return [
        MemberOut(username=m.user.username, role=m.role, joined_at=m.created_at)
        for m in Membership.objects.filter(team=team_obj).select_related("user")
    ]


@router.put("/teams/{team}/members", response=MemberOut)
def put_member(request, team: str, payload: MemberIn):
    team_obj = access.get_team(request.user, team, needed=Role.ADMIN)
    acting = access.role_in(request.user, team_obj)
    m = set_membership(team_obj, payload.username, payload.role, acting_role=acting)
    return MemberOut(username=m.user.username, role=m.role, joined_at=m.created_at)


@router.delete("/teams/{team}/members/{username}", response={204: None})
def delete_member(request, team: str, username: str):
    team_obj = access.get_team(request.user, team, needed=Role.ADMIN)
    remove_membership(team_obj, username, acting_role=access.role_in(request.user, team_obj))
    return Status(204, None)


@router.get("/tokens", response=list[TokenOut])
def list_tokens(request):
    return [_token_out(t) for t in ApiToken.objects.filter(user=request.user)]


@router.post("/tokens", response={201: TokenCreatedOut})
def create_token(request, payload: TokenIn):
    token, raw = ApiToken.issue(request.user, payload.name)
    return Status(201, TokenCreatedOut(**_token_out(token).dict(), token=raw))


@router.delete("/tokens/{token_id}", response={204: None})
def revoke_token(request, token_id: UUID):
    # Tokens are personal: another user's token is simply not found.
    get_object_or_404(ApiToken, uuid=token_id, user=request.user).revoke()
    return Status(204, None)


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut(id=token.uuid, name=token.name, prefix=token.prefix, created_at=token.created_at,
                    last_used_at=token.last_used_at, revoked_at=token.revoked_at)
