"""`create_team SLUG --owner USERNAME [--member USERNAME --role ROLE]...` — output kept stable for scripts."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from lorasite.accounts.models import Role
from lorasite.accounts.services import create_team, set_membership


class Command(BaseCommand):
    help = "Create a team (idempotent) with an owner, and add or update members."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--owner", required=True, help="username; created without a usable password if missing")
        parser.add_argument("--name", default="", help="display name (default: the slug)")
        parser.add_argument("--member", action="append", default=[], help="username to add (repeatable)")
        parser.add_argument("--role", action="append", default=[], choices=[r.value for r in Role],
                            help="role for the --member at the same position (default: member)")

    def handle(self, *args, slug, owner, name, member, role, **options):
        if slugify(slug) != slug:
            raise CommandError(f"{slug!r} is not a valid slug: use lowercase letters, digits and hyphens")
        if len(role) > len(member):
            raise CommandError("each --role needs a --member before it")
        team, created = create_team(slug, owner, name)
        self.stdout.write(f"{'created' if created else 'exists'} team {team.slug} (owner {owner})")
        for index, username in enumerate(member):
            member_role = Role(role[index]) if index < len(role) else Role.MEMBER
            set_membership(team, username, member_role, create_user=True)
            self.stdout.write(f"member {username} role {member_role.value}")
