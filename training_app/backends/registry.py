"""The backends a team can use, by name: the built-in `local`, and its own and the global BackendConfigs.

A config's `type` picks the class (BACKEND_TYPES); a team's config shadows a global one of the same
name. Every remote type runs on the `remote` queue, so the actor of a job is known from its name alone.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from django.db.models import Q
from pydantic import ValidationError

from lorasite.broker import get_broker
from lorasite.errors import InvalidInput
from training_app.backends.base import BackendError, TrainingBackend
from training_app.backends.comfyui import ComfyUIBackend
from training_app.backends.local import LocalBackend
from training_app.backends.replicate import ReplicateBackend
from training_app.models import BackendConfig, TrainingJob

BUILTIN: dict[str, TrainingBackend] = {backend.name: backend for backend in (LocalBackend(),)}
# type -> class taking a BackendConfig.
BACKEND_TYPES: dict[str, Any] = {"comfyui": ComfyUIBackend, "replicate": ReplicateBackend}
REMOTE_QUEUE, REMOTE_ACTOR = "remote", "run_remote_job"


def configs_for(team) -> list[BackendConfig]:
    """The team's enabled configs and the global ones it does not shadow, by name."""
    rows = BackendConfig.objects.filter(enabled=True).filter(Q(team=team) | Q(team__isnull=True)).order_by("name")
    chosen: dict[str, BackendConfig] = {}
    for row in rows:
        if row.name not in chosen or row.team_id is not None:
            chosen[row.name] = row
    return list(chosen.values())


def from_config(config: BackendConfig) -> TrainingBackend:
    cls = BACKEND_TYPES.get(config.type)
    if cls is None:
        raise BackendError(f"Backend {config.name!r} is of type {config.type}, which this installation cannot run.")
    return cls(config)


def backends_for(team) -> list[TrainingBackend]:
    out = list(BUILTIN.values())
    for config in configs_for(team):
        if config.type in BACKEND_TYPES:
            out.append(from_config(config))
    return out


def find_config(team, name: str) -> BackendConfig | None:
    return next((c for c in configs_for(team) if c.name == name), None)


def get_backend(name: str, team=None) -> TrainingBackend:
    """The backend called `name` for this team; 422 naming the choices when there is none."""
    if name in BUILTIN:
        return BUILTIN[name]
    config = find_config(team, name) if team is not None else None
    if config is not None and config.type in BACKEND_TYPES:
        return from_config(config)
    names = [b.name for b in backends_for(team)] if team is not None else list(BUILTIN)
    raise InvalidInput(f"Unknown backend {name!r}; available: {', '.join(names)}.",
                       [{"loc": ["backend"], "msg": f"must be one of {', '.join(names)}"}])


def backend_for_job(job: TrainingJob) -> TrainingBackend:
    """What runs this job: a built-in by name, or the config the job was submitted to."""
    if job.backend in BUILTIN:
        return BUILTIN[job.backend]
    config = job.backend_config
    if config is None:
        raise BackendError(f"The backend {job.backend!r} this job was submitted to has been removed.")
    return from_config(config)


def actor_for(name: str) -> dramatiq.Actor:
    """The Dramatiq actor that runs this backend's jobs (the backend names it and its queue)."""
    backend = BUILTIN.get(name)
    actor_name, queue = (backend.actor_name, backend.queue) if backend else (REMOTE_ACTOR, REMOTE_QUEUE)
    actor = get_broker().get_actor(actor_name)
    if actor.queue_name != queue:
        raise RuntimeError(f"backend {name} names queue {queue} but its actor runs on {actor.queue_name}")
    return actor


def validate_options(type_: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of a config of this type, checked by its class; 422 with loc ["options", key]."""
    cls = BACKEND_TYPES.get(type_)
    if cls is None:
        raise InvalidInput(f"This installation cannot run backends of type {type_!r} "
                           f"(it has {', '.join(BACKEND_TYPES)}).", [{"loc": ["type"], "msg": "not available"}])
    try:
        return cls.Options(**(options or {})).model_dump()
    except ValidationError as exc:
        errors = [{"loc": ["options", *[str(p) for p in e["loc"]]],
                   "msg": f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg'].removeprefix('Value error, ')}"}
                  for e in exc.errors()]
        raise InvalidInput("The backend options are not valid: " + "; ".join(e["msg"] for e in errors),
                           errors) from None
