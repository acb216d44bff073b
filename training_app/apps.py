from __future__ import annotations

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training_app"
    label = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from training_app import listeners, signals, tasks  # noqa: F401  (actors and signal receivers)

        listeners.register()
