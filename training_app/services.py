"""Job operations shared by the API, the pages and the `train` command."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from pydantic import ValidationError

from datasets_app.models import Dataset
from datasets_app.snapshot import build_snapshot
from datasets_app.storage import hold_blobs
from lorasite.accounts import access
from lorasite.accounts.models import Role, Team
from lorasite.errors import InvalidInput
from training_app import lifecycle
from training_app.backends.registry import BUILTIN, find_config, get_backend
from training_app.config import TrainingConfig, validation_errors
from training_app.estimates import Estimate, effective_repeats, estimate, planned_total_steps
from training_app.models import BaseModel, JobStatus, TrainingJob
from training_app.presets import preset_values

ALLOWED_ACTIONS = ("sample", "save")


def base_models_for(*teams: Team):
    return BaseModel.objects.filter(enabled=True).filter(Q(team__isnull=True) | Q(team__in=teams))


def get_base_model(team: Team | list[Team], name: str) -> BaseModel:
    teams = team if isinstance(team, list) else [team]
    model = base_models_for(*teams).filter(name=name).first()
    if model is None:
        raise InvalidInput(f"Unknown base model {name!r}.", [{"loc": ["base_model"], "msg": "no such base model"}])
    return model


def build_config(preset: str | None, overrides: dict[str, Any], dataset: Dataset | None = None) -> TrainingConfig:
    """Preset values, then the dataset's defaults where the caller said nothing, then the caller's values."""
    values = preset_values(preset)
    if dataset is not None:
        if "trigger_word" not in overrides and dataset.trigger_word and not values.get("trigger_word"):
            values["trigger_word"] = dataset.trigger_word
        if "resolution" not in overrides and "resolution" not in values and dataset.default_resolution:
            values["resolution"] = dataset.default_resolution
    values.update(overrides or {})
    try:
        return TrainingConfig(**values)
    except ValidationError as exc:
        errors = validation_errors(exc)
        raise InvalidInput("The training settings are not valid: " + "; ".join(e["msg"] for e in errors),
                           errors) from None
    except TypeError as exc:
        raise InvalidInput(f"The training settings are not valid: {exc}") from None


MAX_IDEMPOTENCY_KEY = 200


def check_idempotency_key(key: str | None) -> str:
    key = (key or "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY or any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise InvalidInput(f"The Idempotency-Key header must be at most {MAX_IDEMPOTENCY_KEY} printable characters.",
                           [{"loc": ["header", "Idempotency-Key"], "msg": "too long or not printable"}])
    return key


def find_submitted(user, idempotency_key: str) -> TrainingJob | None:
    """The job this user already submitted with this key, if any."""
    if not idempotency_key:
        return None
    return TrainingJob.objects.filter(created_by=user, idempotency_key=idempotency_key).first()


def submit_job(user, *, dataset_id, base_model: str, backend: str = "local", preset: str | None = None,
               config: dict[str, Any] | None = None, name: str | None = None, priority: int = 0) -> TrainingJob:
    """Create and queue a job (it is sent to a worker after commit, when its team has a free slot)."""
    with transaction.atomic():
        return _create_job(user, dataset_id=dataset_id, base_model=base_model, backend=backend, preset=preset,
                           config=config, name=name, priority=priority, idempotency_key="")


def submit_job_once(user, *, idempotency_key: str | None, **request: Any) -> tuple[TrainingJob, bool]:
    """`submit_job` for clients that retry: returns (job, created). With an Idempotency-Key this user
    already used, returns their first job and created=False, whatever the request says now."""
    key = check_idempotency_key(idempotency_key)
    existing = find_submitted(user, key)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return _create_job(user, idempotency_key=key, **request), True
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its job.
        existing = find_submitted(user, key)
        if existing is None:
            raise
        return existing, False


def _create_job(user, *, dataset_id, base_model: str, backend: str = "local", preset: str | None = None,
                config: dict[str, Any] | None = None, name: str | None = None, priority: int = 0,
                idempotency_key: str = "") -> TrainingJob:
    dataset = access.get_visible(Dataset.objects.select_related("team"), user, needed=Role.MEMBER, uuid=dataset_id)
    team = dataset.team
    backend_impl = get_backend(backend, team)
    model = get_base_model(team, base_model)
    cfg = build_config(preset, config or {}, dataset)
    snapshot = build_snapshot(dataset)
    if not snapshot["images"]:
        raise InvalidInput("The dataset has no images to train on (rejected images are left out).",
                           [{"loc": ["dataset_id"], "msg": "no trainable images"}])
    total_steps = planned_total_steps(cfg, snapshot["images"])
    _check_backend(backend_impl, cfg, model, total_steps)
    job = TrainingJob.objects.create(
        team=team, dataset=dataset, name=name or f"{dataset.name} · {preset or 'custom'}", created_by=user,
        base_model=model, backend=backend_impl.name, preset=preset or "",
        backend_config=None if backend_impl.name in BUILTIN else find_config(team, backend_impl.name), config=cfg.model_dump(),
        snapshot=snapshot, snapshot_sha256=snapshot["sha256"], image_count=len(snapshot["images"]),
        total_steps=total_steps, priority=priority,
        idempotency_key=idempotency_key,
    )
    # The snapshot's bytes stay stored even if the dataset or its images are deleted: retries and
    # resumes of this job still find them.
    hold_blobs([image["sha256"] for image in snapshot["images"]], holder=job.blob_holder)
    # Its job-changed event sends it to a worker after commit, if the team has a free slot.
    lifecycle.submit(job)
    return job


def _check_backend(backend_impl, cfg: TrainingConfig, model: BaseModel, total_steps: int | None) -> None:
    errors = backend_impl.validate(cfg, model, total_steps=total_steps)
    if errors:
        raise InvalidInput("This backend cannot run these settings: " + "; ".join(e["msg"] for e in errors), errors)


def estimate_job(user, *, config: dict[str, Any], preset: str | None = None, dataset_id=None,
                 image_count: int | None = None, base_model: str | None = None, family: str | None = None,
                 backend: str = "local", gpu: str = "h100") -> Estimate:
    """What a job would cost: exact steps for a dataset (its buckets and repeats), or an image count."""
    dataset = access.get_visible(Dataset.objects.select_related("team"), user, uuid=dataset_id) if dataset_id else None
    cfg = build_config(preset, config, dataset)
    tiny = False
    if base_model:
        model = get_base_model([dataset.team] if dataset else list(access.teams_for(user)), base_model)
        family, tiny = model.family, model.name.startswith("tiny-")
    teams = [dataset.team] if dataset else list(access.teams_for(user))
    backend_impl = get_backend(backend, teams[0] if len(teams) == 1 else None)
    if dataset is not None:
        images = build_snapshot(dataset)["images"]
        result = estimate(cfg, len(images), family or "sd15", gpu=gpu, paid=backend_impl.paid, tiny=tiny,
                          repeats_total=sum(effective_repeats(i, cfg) for i in images),
                          total_steps=planned_total_steps(cfg, images))
    elif not image_count:
        raise InvalidInput("Give a dataset_id or an image_count.", [{"loc": ["image_count"], "msg": "required"}])
    else:
        result = estimate(cfg, image_count, family or "sd15", gpu=gpu, paid=backend_impl.paid, tiny=tiny)
    if backend_impl.paid and base_model:
        # No price for a paid run that could not start: the same 422 the submit would give.
        _check_backend(backend_impl, cfg, model, result.total_steps)
    # A backend that knows its own price (Replicate) says what the run costs there.
    cost = backend_impl.estimate_cost(cfg, result.total_steps, model if base_model else None)
    return dataclasses.replace(result, estimated_cost_usd=round(cost, 2)) if cost is not None else result


def get_job(user, job_id, needed: Role = Role.VIEWER) -> TrainingJob:
    return access.get_visible(TrainingJob.objects.select_related("team", "base_model", "dataset", "created_by"),
                              user, needed=needed, uuid=job_id)


def cancel_job(user, job_id) -> TrainingJob:
    """A queued job is cancelled at once; a running one is marked cancelling, and the worker that
    runs it stops at its next step (it reads the job row): no backend code runs in the request."""
    job = get_job(user, job_id, needed=Role.MEMBER)
    return lifecycle.request_cancel(job.pk)


def retry_job(user, job_id) -> TrainingJob:
    job = get_job(user, job_id, needed=Role.MEMBER)
    return lifecycle.retry(job.pk)


def request_action(user, job_id, action: str) -> TrainingJob:
    if action not in ALLOWED_ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ALLOWED_ACTIONS)}",
                           [{"loc": ["action"], "msg": "must be sample or save"}])
    job = get_job(user, job_id, needed=Role.MEMBER)
    with transaction.atomic():
        locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.RUNNING:
            raise InvalidInput(f"Only a running job can {action} now; this one is {locked.status}.")
        if action not in locked.requested_actions:
            locked.requested_actions = [*locked.requested_actions, action]
            locked.save(update_fields=["requested_actions"])
    return locked


def queue_position(job: TrainingJob) -> int | None:
    """1 for the next job of its team to start; None unless queued."""
    if job.status != JobStatus.QUEUED:
        return None
    ahead = TrainingJob.objects.filter(team_id=job.team_id, status=JobStatus.QUEUED).filter(
        Q(priority__gt=job.priority) | Q(priority=job.priority, queued_at__lt=job.queued_at)
        | Q(priority=job.priority, queued_at=job.queued_at, id__lt=job.id)
    ).count()
    return ahead + 1


