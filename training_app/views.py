"""Portal pages: the team dashboard, the new-training form, job pages, compare, and team settings."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from datasets_app.models import Dataset
from lorasite.accounts import access
from lorasite.accounts.models import Membership, Role
from lorasite.accounts.pages import page_errors, team_for_page
from lorasite.accounts.services import remove_membership, set_membership
from lorasite.core.workers import live_workers
from lorasite.errors import DomainError, InvalidInput, NotFound
from training_app import backend_configs, services
from training_app.artifacts import artifact_url, download_filename
from training_app.backends.registry import backends_for
from training_app.charts import downsampled_loss_points
from training_app.dispatch import waiting_reason
from training_app.form_fields import form_groups
from training_app.models import ArtifactKind, BackendType, JobStatus, TrainingJob
from training_app.notifications import create_webhook, delete_webhook, team_webhooks
from training_app.presets import FAMILY_RESOLUTIONS, PRESETS
from training_app.reporting import phase_state
from training_app.trainer.networks import describe, layouts_for, loaders_for
from training_app.trainer.reporter import LORA_LAYOUTS

RECENT_FINISHED = 25
CHART_POINTS = 2000
# LoRA downloads in the order the job page lists them, with the button's words.
LORA_DOWNLOADS = ((ArtifactKind.LORA_KOHYA, "kohya", "Download kohya / A1111 / ComfyUI"),
                  (ArtifactKind.LORA_DIFFUSERS, "diffusers", "Download diffusers"),
                  (ArtifactKind.LORA_REMOTE, "remote", "Download as the remote trainer wrote it"))


def _team(request, slug: str, needed: Role = Role.VIEWER):
    team = team_for_page(request.user, slug, needed)
    return team, access.role_in(request.user, team)


def _job(request, team, job_id) -> TrainingJob:
    with page_errors("Job not found"):
        job = services.get_job(request.user, job_id)
    if job.team_id != team.pk:
        raise Http404("Job not found")
    return job


def dashboard_context(team) -> dict:
    """Everything the dashboard shows, in a constant number of queries whatever the job counts."""
    jobs = TrainingJob.objects.filter(team=team).select_related("created_by", "base_model", "dataset").defer(
        "snapshot", "config")
    running = list(jobs.filter(status__in=[JobStatus.RUNNING, JobStatus.CANCELLING]).order_by("started_at"))
    queued = list(jobs.filter(status=JobStatus.QUEUED).order_by("-priority", "queued_at", "id"))
    finished = list(jobs.filter(status__in=[JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
                    .order_by("-finished_at", "-id")[:RECENT_FINISHED])
    workers = live_workers()
    backends = []
    for backend in backends_for(team):
        state = backend.availability()
        backends.append({"name": backend.name, "label": backend.label, "available": state.available,
                         "detail": state.detail})
    return {"team": team, "running": running, "queued": queued, "finished": finished, "workers": workers,
            "backends": backends}


@login_required
def dashboard(request, slug: str):
    team, role = _team(request, slug)
    context = dashboard_context(team) | {"role": role, "can_train": role.allows(Role.MEMBER)}
    if request.GET.get("fragment") == "jobs":
        return render(request, "training/_dashboard_jobs.html", context)
    return render(request, "training/dashboard.html", context)


@login_required
def new_training(request, slug: str):
    team, role = _team(request, slug, needed=Role.MEMBER)
    datasets = list(Dataset.objects.filter(team=team).order_by("name"))
    base_models = list(services.base_models_for(team))
    errors: list[dict] = []
    detail = ""
    initial = _clone_values(request, team) or (
        {"dataset_id": request.GET["dataset"]} if request.GET.get("dataset") else {})
    if request.method == "POST":
        try:
            payload = json.loads(request.POST.get("payload") or "{}")
            job = services.submit_job(request.user, dataset_id=payload.get("dataset_id"),
                                      base_model=payload.get("base_model", ""), backend=payload.get("backend", "local"),
                                      preset=payload.get("preset") or None, config=payload.get("config") or {},
                                      name=payload.get("name") or None)
            return redirect("training:job", slug=team.slug, job_id=job.uuid)
        except (ValueError, TypeError):
            detail = "The form could not be read; try again."
        except DomainError as exc:
            detail, errors = exc.message, getattr(exc, "errors", [])
        initial = payload if isinstance(payload, dict) else initial
    backends = [{"name": b.name, "label": b.label, "families": list(b.families), "paid": b.paid}
                for b in backends_for(team)]
    return render(request, "training/new.html", {
        "team": team, "role": role, "datasets": datasets, "base_models": base_models, "backends": backends,
        "presets": PRESETS, "initial": initial, "errors": errors, "error_detail": detail, "groups": form_groups(),
        "resolutions": sorted({d.default_resolution for d in datasets} | {512, 768, 1024}),
        "page_data": {"presets": PRESETS, "backends": backends, "initial": initial, "errors": errors,
                      "family_resolutions": FAMILY_RESOLUTIONS,
                      "datasets": [{"id": str(d.uuid), "name": d.name, "trigger_word": d.trigger_word,
                                    "default_resolution": d.default_resolution} for d in datasets],
                      "base_models": [{"name": m.name, "family": m.family} for m in base_models]},
    }, status=422 if detail else 200)


def _clone_values(request, team) -> dict:
    source = request.GET.get("clone")
    if not source:
        return {}
    try:
        job = services.get_job(request.user, source)
    except NotFound:
        return {}
    if job.team_id != team.pk:
        return {}
    return {"dataset_id": str(job.dataset.uuid) if job.dataset else "", "base_model": job.base_model.name,
            "backend": job.backend, "preset": job.preset, "config": job.config, "name": f"{job.name} (copy)"}


def lora_downloads(job: TrainingJob, artifacts) -> list[dict]:
    """The job's LoRA files as its page lists them, on a fresh load and after a live update alike."""
    by_kind = {a.kind: a for a in artifacts}
    return [{"label": label, "url": f"/api/jobs/{job.uuid}/weights?layout={layout}", "layout": layout,
             "filename": download_filename(by_kind[kind]), "size_bytes": by_kind[kind].size_bytes,
             "sha256": by_kind[kind].sha256}
            for kind, layout, label in LORA_DOWNLOADS if kind in by_kind]


@login_required
def job_page(request, slug: str, job_id):
    team, role = _team(request, slug)
    job = _job(request, team, job_id)
    artifacts = list(job.artifacts.select_related("job"))
    files = lora_downloads(job, artifacts)
    if request.GET.get("fragment") == "files":
        return render(request, "training/_job_files.html", {"job": job, "files": files})
    # A grid by step, then prompt (the order the trainer renders them in).
    samples = sorted((a for a in artifacts if a.kind == ArtifactKind.SAMPLE), key=lambda a: (a.step or 0, a.path))
    points = downsampled_loss_points(job, max_points=CHART_POINTS)
    return render(request, "training/job.html", {
        "team": team, "role": role, "job": job, "can_train": role.allows(Role.MEMBER), "files": files,
        "samples": [{"step": a.step, "url": artifact_url(a), "prompt": a.prompt} for a in samples],
        "queue_position": services.queue_position(job),
        "waiting_for": waiting_reason(job),
        "phase": phase_state(job),
        "chart_data": {"points": [[p.step, p.loss, p.lr] for p in points], "job": str(job.uuid),
                       "status": job.status},
        "config_json": json.dumps(job.config, indent=2, sort_keys=True),
        "logs": [log.line for log in job.logs.order_by("-id")[:200]][::-1],
        "network": network_summary(job.config),
    })


LAYOUT_WORDS = {"kohya": "kohya / LyCORIS file", "diffusers": "diffusers file"}


def network_summary(config: dict) -> dict:
    """What the job trains, which files it writes and what loads them (the trainer's table, no torch)."""
    network, dora = config.get("network", "lora"), bool(config.get("dora", False))
    layouts = layouts_for(network)
    missing = [LAYOUT_WORDS[layout] for layout in LORA_LAYOUTS if layout not in layouts]
    return {"name": describe(network, dora), "layouts": [LAYOUT_WORDS[layout] for layout in layouts],
            "missing": missing, "loaders": loaders_for(network, dora)}


def _control(user, job: TrainingJob, action: str) -> str:
    """Do a job page button's action; returns what to tell the person."""
    if action == "cancel":
        job = services.cancel_job(user, job.uuid)
        if job.status == JobStatus.CANCELLING:
            return "Cancelling: the trainer stops at its next step and saves what it has."
        return "Cancelled."
    if action == "retry":
        services.retry_job(user, job.uuid)
        return "Back in the queue: it resumes from its last checkpoint."
    if action in ("sample", "save"):
        services.request_action(user, job.uuid, action)
        return f"The trainer will {action} at its next step."
    raise Http404()


@login_required
@require_POST
def job_control(request, slug: str, job_id, action: str):
    """The job page's buttons. A plain form post redirects back with a message; the page's script
    asks for JSON and updates itself in place."""
    team, _ = _team(request, slug, needed=Role.MEMBER)
    job = _job(request, team, job_id)
    wants_json = "application/json" in request.headers.get("Accept", "")
    try:
        message = _control(request.user, job, action)
    except DomainError as exc:
        if wants_json:
            return JsonResponse({"detail": exc.message}, status=exc.status)
        messages.error(request, exc.message)
    else:
        if wants_json:
            job.refresh_from_db()
            return JsonResponse({"message": message, "status": job.status, "error": job.error or None,
                                 "attempts": job.attempts})
        messages.success(request, message)
    return redirect("training:job", slug=team.slug, job_id=job.uuid)


@login_required
def compare(request, slug: str):
    team, role = _team(request, slug)
    chosen = [j for j in request.GET.getlist("jobs") if j][:6]
    jobs = list(TrainingJob.objects.filter(team=team).select_related("base_model").defer("snapshot")
                .order_by("-created_at")[:200])
    selected = [j for j in jobs if str(j.uuid) in chosen]
    series = []
    for job in selected:
        points = downsampled_loss_points(job, max_points=800)
        sample = job.artifacts.filter(kind=ArtifactKind.SAMPLE).select_related("job").order_by("-step").first()
        short_id = job.uuid.hex[:8]
        series.append({"id": str(job.uuid), "name": job.name, "short_id": short_id, "label": f"{job.name} · {short_id}",
                       "points": [[p.step, p.loss] for p in points],
                       "sample": artifact_url(sample) if sample else None, "config": job.config,
                       "status": job.status})
    return render(request, "training/compare.html", {"team": team, "role": role, "jobs": jobs,
                                                     "selected": selected, "chosen": chosen,
                                                     "series": series})


@login_required
def team_settings(request, slug: str):
    team, role = _team(request, slug)
    is_admin = role.allows(Role.ADMIN)
    if request.method == "POST":
        team, role = _team(request, slug, needed=Role.ADMIN)
        _apply_settings_form(request, team, role)
        return redirect(reverse("training:settings", args=[team.slug]))
    memberships = Membership.objects.filter(team=team).select_related("user").order_by("user__username")
    return render(request, "training/settings.html", {
        "team": team, "role": role, "is_admin": is_admin, "memberships": memberships, "roles": Role.choices,
        "backends": [{"name": b.name, "label": b.label, "families": b.families, "paid": b.paid,
                      "state": b.availability().detail} for b in backends_for(team)],
        "team_backends": [_backend_row(c) for c in team.backend_configs.order_by("name")] if is_admin else [],
        "backend_types": BackendType.choices,
        "webhooks": team_webhooks(team) if is_admin else [],
    })


def _backend_row(config) -> dict:
    # The token variable's name is not rendered back: the form only says whether one is set.
    return {"uuid": config.uuid, "name": config.name, "type": config.type, "base_url": config.base_url,
            "token_env": bool(config.token_env), "request_timeout_seconds": config.request_timeout_seconds,
            "overall_timeout_seconds": config.overall_timeout_seconds,
            "max_concurrent_jobs": config.max_concurrent_jobs, "options_json": json.dumps(config.options)}


def _save_backend(request, team) -> None:
    post = request.POST
    existing = backend_configs.team_config(team, post["backend"]) if post.get("backend") else None
    try:
        options = json.loads(post.get("options") or "{}")
    except ValueError:
        raise InvalidInput("Options must be a JSON object, e.g. {\"checkpoints\": {\"sd15\": \"v1-5.safetensors\"}}.",
                           [{"loc": ["options"], "msg": "not JSON"}]) from None
    values = {key: post.get(key, "") for key in backend_configs.FIELDS if key != "options"}
    values["options"] = options
    if existing is not None and not values["token_env"]:
        del values["token_env"]  # never shown back: left blank keeps the stored name
    config = backend_configs.save(team, values, existing)
    messages.success(request, f"Backend {config.name} saved.")


def _apply_settings_form(request, team, role) -> None:
    action = request.POST.get("action")
    try:
        if action == "member":
            set_membership(team, request.POST.get("username", "").strip(), Role(request.POST.get("role", "member")),
                           acting_role=role)
            messages.success(request, "Member saved.")
        elif action == "remove-member":
            remove_membership(team, request.POST.get("username", ""), acting_role=role)
            messages.success(request, "Member removed.")
        elif action == "limits":
            value = int(request.POST.get("max_concurrent_jobs", "0"))
            if not 1 <= value <= 64:
                raise ValueError
            team.max_concurrent_jobs = value
            team.save(update_fields=["max_concurrent_jobs"])
            messages.success(request, "Limit saved.")
        elif action == "webhook":
            _, secret = create_webhook(team, request.POST.get("url", ""), request.user)
            messages.success(request, f"Webhook added. Its signing secret (shown once): {secret}")
        elif action == "remove-webhook":
            delete_webhook(team, request.POST.get("webhook", ""))
            messages.success(request, "Webhook removed.")
        elif action == "backend":
            _save_backend(request, team)
        elif action == "remove-backend":
            backend_configs.delete(team, request.POST.get("backend", ""))
            messages.success(request, "Backend removed.")
    except DomainError as exc:
        messages.error(request, exc.message)
    except ValueError:
        messages.error(request, "Concurrent jobs must be a whole number between 1 and 64.")
