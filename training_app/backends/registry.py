"""The backends this installation offers, by name."""

from __future__ import annotations

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
