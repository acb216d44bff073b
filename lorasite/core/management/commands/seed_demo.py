"""Seed the embedded demo: a team, a user with a password it prints. Safe to run again."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from lorasite.accounts.models import Role
from lorasite.accounts.services import create_team, set_membership


class Command(BaseCommand):
    help = "Create (or refresh) the demo team and user for embedded mode."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--team", default="demo")

    def handle(self, *args, username, team, **options):
        password = os.environ.get("DEMO_PASSWORD", "lorasite-demo")
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
        user.set_password(password)
        # The demo runs on the operator's own laptop: give them the Django admin too.
        user.is_staff = user.is_superuser = True
        user.save()
        team_obj, _ = create_team(team, username, name="Demo team")
        set_membership(team_obj, username, Role.OWNER, create_user=True)
        for hook in _seed_hooks():
            hook(team_obj, user, self.stdout)
        self.stdout.write(self.style.SUCCESS(f"demo login: username {username!r}, password {password!r}"))


def _seed_hooks():
    """Each app may seed demo content (datasets, base models) through a `seed_demo(team, user, out)`."""
    import importlib

    for module_name in ("datasets_app.demo", "training_app.demo"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        yield module.seed_demo
