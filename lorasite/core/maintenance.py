"""Periodic maintenance that worker processes run: apps register hooks (the job reaper, the
reconciler), the platform's worker thread calls them. The platform never imports an app for this."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenanceHook:
    name: str
    run: Callable[[], object]


_hooks: dict[str, MaintenanceHook] = {}


def register(name: str, run: Callable[[], object]) -> None:
    """Add (or replace) the hook called `name`."""
    _hooks[name] = MaintenanceHook(name, run)


def hooks() -> list[MaintenanceHook]:
    return list(_hooks.values())


def run_all() -> dict[str, object]:
    """Run every hook; one failing hook is logged and does not stop the others."""
    results: dict[str, object] = {}
    for hook in hooks():
        try:
            results[hook.name] = hook.run()
        except Exception:
            logger.warning("maintenance hook %s failed", hook.name, exc_info=True)
    return results
