"""`create_api_token USERNAME [--name NAME]` prints only the new token, so scripts can capture it."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from lorasite.accounts.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for a user and print it (shown once, stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user called {username!r}")
        if not user.is_active:
            raise CommandError(f"user {username!r} is inactive")
        _, raw = ApiToken.issue(user, name)
        self.stdout.write(raw)
