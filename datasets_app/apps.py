from __future__ import annotations

from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "datasets_app"
    label = "datasets"
    verbose_name = "Datasets"

    def ready(self) -> None:
        from datasets_app import listeners, storage, tasks  # noqa: F401  (storage: blob collector signal; tasks: actors)

        listeners.register()
