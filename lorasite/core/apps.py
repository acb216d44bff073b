"""Project-wide wiring that must happen before app modules load: the Dramatiq broker."""

from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "lorasite.core"
    label = "core"
    verbose_name = "lorasite core"

    def ready(self) -> None:
        from lorasite.broker import setup_broker

        setup_broker()
        from lorasite.core import tasks  # noqa: F401  (registers actors with the broker)
