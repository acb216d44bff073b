"""Team and membership operations shared by the API, the settings page and management commands."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction

from lorasite.accounts.models import Membership, Role, Team
from lorasite.errors import InvalidInput, NotFound, PermissionDenied
from lorasite.realtime import announce_access_change


def validate_username(username: str) -> str:
    """Django's username rule (letters, digits and @.+-_, at most 150), with no surrounding spaces, so no
    look-alike account ("ana " beside "ana") or markup can be made."""
    User = get_user_model()
    problem = None
    if username != username.strip() or not username:
        problem = "must not be empty or start or end with spaces"
    elif len(username) > User._meta.get_field("username").max_length:
        problem = "is too long (at most 150 characters)"
    else:
        try:
            UnicodeUsernameValidator()(username)
        except ValidationError:
            problem = "may contain only letters, digits and @ . + - _"
    if problem:
        raise InvalidInput(f"The username {problem}.", [{"loc": ["username"], "msg": problem}])
    return username


def get_or_create_user(username: str):
    """The user called `username`; a new one gets no usable password (they set one or use tokens)."""
    User = get_user_model()
    user, created = User.objects.get_or_create(username=validate_username(username))
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user, created


@transaction.atomic
def create_team(slug: str, owner_username: str, name: str = "") -> tuple[Team, bool]:
    team, created = Team.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    owner, _ = get_or_create_user(owner_username)
    Membership.objects.update_or_create(team=team, user=owner, defaults={"role": Role.OWNER})
    return team, created


@transaction.atomic
def set_membership(team: Team, username: str, role: Role, acting_role: Role | None = None,
                   create_user: bool = False) -> Membership:
    """Add or change a member. Only an owner may create or demote owners, so no admin can take over.
    Team admins add existing accounts only (`create_user` is for operators' commands)."""
    role = Role(role)
    if create_user:
        user, _ = get_or_create_user(username)
    else:
        user = get_user_model().objects.filter(username=validate_username(username)).first()
        if user is None:
            raise InvalidInput(f"There is no account called {username!r}. They sign in once (or an operator "
                               "creates the account with manage.py create_team … --member), then add them.",
                               [{"loc": ["username"], "msg": "no such account"}])
    existing = Membership.objects.select_for_update().filter(team=team, user=user).first()
    if acting_role is not None and acting_role != Role.OWNER:
        if role == Role.OWNER or (existing and existing.role == Role.OWNER):
            raise PermissionDenied("Only an owner can add, change or remove owners.")
    if existing and existing.role == Role.OWNER and role != Role.OWNER:
        _ensure_another_owner(team, existing)
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    transaction.on_commit(lambda: announce_access_change(user.pk))
    return membership


@transaction.atomic
def remove_membership(team: Team, username: str, acting_role: Role | None = None) -> None:
    membership = Membership.objects.select_for_update().filter(team=team, user__username=username).first()
    if membership is None:
        raise NotFound("No such member.")
    if membership.role == Role.OWNER:
        if acting_role is not None and acting_role != Role.OWNER:
            raise PermissionDenied("Only an owner can add, change or remove owners.")
        _ensure_another_owner(team, membership)
    membership.delete()
    user_id = membership.user_id
    # Their open sockets of this team close within moments.
    transaction.on_commit(lambda: announce_access_change(user_id))


def _ensure_another_owner(team: Team, membership: Membership) -> None:
    if not Membership.objects.filter(team=team, role=Role.OWNER).exclude(pk=membership.pk).exists():
        raise InvalidInput("A team needs at least one owner; make someone else owner first.")
