from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ninja import Schema
from pydantic import Field

from lorasite.accounts.models import Role


class TeamRoleOut(Schema):
    id: UUID
    slug: str
    name: str
    role: Role


class MeOut(Schema):
    username: str
    email: str
    is_staff: bool
    teams: list[TeamRoleOut]


class MemberOut(Schema):
    username: str
    role: Role
    joined_at: datetime


class MemberIn(Schema):
    username: str = Field(min_length=1, max_length=150)
    role: Role = Role.MEMBER


class TokenIn(Schema):
    name: str = Field(min_length=1, max_length=100)


class TokenOut(Schema):
    id: UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The secret. Shown once; store it now.")
