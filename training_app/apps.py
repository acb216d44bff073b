from __future__ import annotations

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training_app"
    label = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from training_app import tasks  # noqa: F401  (registers actors with the broker)
