"""`add_caption_provider NAME --team SLUG --type TYPE [...]`: prints the new provider's id only, for scripts."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from datasets_app.caption_providers import create_provider
from datasets_app.captioning.registry import TYPES
from lorasite.accounts.models import Team
from lorasite.errors import DomainError


class Command(BaseCommand):
    help = "Add a caption provider for a team (or, with --global, for every team); prints its id."

    def add_arguments(self, parser):
        parser.add_argument("name")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--team", help="team slug")
        where.add_argument("--global", dest="is_global", action="store_true", help="available to every team")
        parser.add_argument("--type", required=True, choices=TYPES)
        parser.add_argument("--base-url", default="")
        parser.add_argument("--model", default="")
        parser.add_argument("--api-key-env", default="", help="NAME of the environment variable holding the key")
        parser.add_argument("--prompt", default="")
        parser.add_argument("--concurrency", type=int, default=4)
        parser.add_argument("--timeout", type=int, default=60, help="seconds per request")
        parser.add_argument("--max-side", type=int, default=768, help="longest image side sent, in pixels")

    def handle(self, *args, name, team, is_global, type, base_url, model, api_key_env, prompt, concurrency,
               timeout, max_side, **options):
        team_obj = None
        if team:
            team_obj = Team.objects.filter(slug=team).first()
            if team_obj is None:
                raise CommandError(f"No team {team!r}.")
        try:
            provider = create_provider(team_obj, name=name, type=type, base_url=base_url, model=model,
                                       api_key_env=api_key_env, prompt=prompt, concurrency=concurrency,
                                       timeout_seconds=timeout, max_image_side=max_side)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(str(provider.uuid))
