"""`manage.py add_backend NAME --team SLUG --type comfyui|replicate [--base-url URL] [--token-env VAR]
[--option KEY=VALUE ...]`: register a remote backend (prints its name only, for scripts)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from lorasite.accounts.models import Team
from lorasite.errors import DomainError
from training_app import backend_configs
from training_app.models import BackendType


class Command(BaseCommand):
    help = "Register a ComfyUI server or a Replicate account as a backend of a team (or of every team)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        scope = parser.add_mutually_exclusive_group(required=True)
        scope.add_argument("--team", help="slug of the team that owns it")
        scope.add_argument("--global", dest="global_", action="store_true", help="offer it to every team")
        parser.add_argument("--type", required=True, choices=BackendType.values)
        parser.add_argument("--base-url", default="", help="the server's URL (Replicate: https://api.replicate.com)")
        parser.add_argument("--token-env", default="", help="NAME of the environment variable holding the token")
        parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                            help="e.g. checkpoints.sd15-base=v1-5-pruned-emaonly.safetensors (repeatable)")
        parser.add_argument("--max-concurrent-jobs", type=int, default=1)
        parser.add_argument("--request-timeout", type=float, default=30.0)

    def handle(self, *args, **o):
        team = None
        if o["team"]:
            team = Team.objects.filter(slug=o["team"]).first()
            if team is None:
                raise CommandError(f"no team with slug {o['team']!r}")
        try:
            config = backend_configs.save(team, {
                "name": o["name"], "type": o["type"], "base_url": o["base_url"], "token_env": o["token_env"],
                "options": backend_configs.parse_options(o["option"]),
                "max_concurrent_jobs": o["max_concurrent_jobs"], "request_timeout_seconds": o["request_timeout"]})
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(config.name)
