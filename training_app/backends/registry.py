"""The backends this installation offers, by name."""

from __future__ import annotations

import dramatiq

from lorasite.broker import get_broker
from lorasite.errors import InvalidInput
from training_app.backends.base import TrainingBackend
from training_app.backends.local import LocalBackend

_BACKENDS: dict[str, TrainingBackend] = {backend.name: backend for backend in (LocalBackend(),)}


def all_backends() -> list[TrainingBackend]:
    return list(_BACKENDS.values())


def get_backend(name: str) -> TrainingBackend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise InvalidInput(f"Unknown backend {name!r}; available: {', '.join(_BACKENDS)}.",
                           [{"loc": ["backend"], "msg": f"must be one of {', '.join(_BACKENDS)}"}]) from None


def actor_for(name: str) -> dramatiq.Actor:
    """The Dramatiq actor that runs this backend's jobs (the backend names it and its queue)."""
    backend = get_backend(name)
    actor = get_broker().get_actor(backend.actor_name)
    if actor.queue_name != backend.queue:
        raise RuntimeError(f"backend {name} names queue {backend.queue} but its actor runs on {actor.queue_name}")
    return actor
