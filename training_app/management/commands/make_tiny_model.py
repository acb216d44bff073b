"""Write the tiny SD-1.5- and SDXL-shaped models (random weights) and register them as base models."""

from __future__ import annotations

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Build tiny-sd15 and tiny-sdxl under LORASITE_MODELS_DIR (if missing) and register them."

    def handle(self, *args, **options):
        from training_app.demo import ensure_tiny_models

        for model in ensure_tiny_models(self.stdout):
            self.stdout.write(f"{model.name}: {model.family} at {model.location}")
