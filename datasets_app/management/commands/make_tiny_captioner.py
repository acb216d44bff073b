"""Write the tiny random BLIP captioner used by tests and the demo (`local` provider)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Build a tiny randomly initialised BLIP under CAPTION_MODELS_DIR/NAME (default tiny-blip)."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", default="tiny-blip",
                            help="folder name under CAPTION_MODELS_DIR; a local provider's model")

    def handle(self, *args, name, **options):
        from datasets_app.captioning.local import resolve_model_dir
        from datasets_app.captioning.tiny import build_tiny_captioner

        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise CommandError("NAME is one folder name (no slashes), e.g. tiny-blip.")
        path = build_tiny_captioner(settings.CAPTION_MODELS_DIR / name)
        resolve_model_dir(name)  # the folder it wrote is one a local provider accepts
        self.stdout.write(str(path))
