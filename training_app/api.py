"""Training endpoints: presets, estimates, base models, backends, jobs and their files, remote webhooks."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from django.conf import settings
from django.http import FileResponse, HttpResponse
from ninja import Query, Router, Status

from lorasite.accounts import access
from lorasite.errors import InvalidInput, NotFound
from training_app import job_exports, services
from training_app.artifacts import artifact_url, download_filename
from training_app.backends import replicate_hooks
from training_app.backends.registry import backends_for
from training_app.charts import downsampled_loss_points
from training_app.dispatch import waiting_reason
from training_app.models import Artifact, ArtifactKind, JobStatus, TrainingJob
from training_app.presets import PRESETS
from training_app.schemas import (
    ActionIn,
    ArtifactOut,
    BackendOut,
    BaseModelOut,
    EstimateIn,
    EstimateOut,
    EventsOut,
    JobDetailOut,
    JobIn,
    JobOut,
    LogLineOut,
    LossPointOut,
    PresetOut,
    WebhookReceiptOut,
)

router = Router(tags=["training"])


@router.get("/presets", response=list[PresetOut])
def list_presets(request):
    return [PresetOut(name=name, description=p["description"], families=p["families"], config=p["config"])
            for name, p in PRESETS.items()]


@router.get("/backends", response=list[BackendOut])
def list_backends(request, team: str | None = None):
    """Every backend the team can train on, with its live availability (asked of each server now)."""
    return [backend_out(backend) for backend in backends_for(access.get_team(request.user, team))]


def backend_out(backend) -> BackendOut:
    state = backend.availability()
    config = getattr(backend, "config", None)
    return BackendOut(name=backend.name, label=backend.label, kind=backend.kind, queue=backend.queue,
                      families=list(backend.families), paid=backend.paid, available=state.available,
                      detail=state.detail, facts=state.facts,
                      scope="builtin" if config is None else ("global" if config.team_id is None else "team"),
                      max_concurrent_jobs=config.max_concurrent_jobs if config else None)


@router.get("/base-models", response=list[BaseModelOut])
def list_base_models(request, team: str | None = None):
    if team:
        teams = [access.get_team(request.user, team)]
    else:
        teams = list(access.teams_for(request.user))
    models = services.base_models_for(*teams)
    return [BaseModelOut(id=m.uuid, name=m.name, family=m.family, description=m.description,
                         available=True, detail="") for m in models]


@router.post("/estimate", response=EstimateOut)
def post_estimate(request, payload: EstimateIn):
    result = services.estimate_job(request.user, config=payload.config, preset=payload.preset,
                                   dataset_id=payload.dataset_id, image_count=payload.image_count,
                                   base_model=payload.base_model, family=payload.family, backend=payload.backend,
                                   gpu=payload.gpu)
    return EstimateOut(**result.__dict__)


def job_out(job: TrainingJob) -> dict:
    return {
        "id": job.uuid, "name": job.name, "team": job.team.slug, "dataset_id": job.dataset.uuid if job.dataset else None,
        "base_model": job.base_model.name, "backend": job.backend, "preset": job.preset, "status": job.status,
        "step": job.step, "total_steps": job.total_steps, "percent": job.percent, "loss": job.loss,
        "avg_loss": job.avg_loss, "lr": job.lr, "eta_seconds": job.eta_seconds, "error": job.error,
        "priority": job.priority, "attempts": job.attempts, "image_count": job.image_count,
        "created_by": job.created_by.username if job.created_by else None, "created_at": job.created_at,
        "started_at": job.started_at, "finished_at": job.finished_at, "config": job.config,
        "remote_id": job.remote_id, "cost_usd": job.cost_usd,
    }


def job_detail(job: TrainingJob) -> JobDetailOut:
    return JobDetailOut(**job_out(job), snapshot_sha256=job.snapshot_sha256, snapshot=job.snapshot,
                        queue_position=services.queue_position(job), waiting_for=waiting_reason(job))


@router.post("/jobs", response={200: JobDetailOut, 201: JobDetailOut})
def create_job(request, payload: JobIn):
    """201 with the new job; 200 with the first job when this Idempotency-Key was already used."""
    job, created = services.submit_job_once(
        request.user, idempotency_key=request.headers.get("Idempotency-Key"), dataset_id=payload.dataset_id,
        base_model=payload.base_model, backend=payload.backend, preset=payload.preset, config=payload.config,
        name=payload.name, priority=payload.priority)
    return Status(201 if created else 200, job_detail(services.get_job(request.user, job.uuid)))


@router.get("/jobs", response=list[JobOut])
def list_jobs(request, status: str | None = None, team: str | None = None, limit: int = Query(100, ge=1, le=500)):
    jobs = access.visible(TrainingJob.objects.select_related("team", "base_model", "dataset", "created_by"),
                          request.user)
    if team:
        jobs = jobs.filter(team=access.get_team(request.user, team))
    if status:
        wanted = [s.strip() for s in status.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(JobStatus.values))
        if unknown:
            raise InvalidInput(f"Unknown status {', '.join(unknown)}; statuses are {', '.join(JobStatus.values)}.")
        jobs = jobs.filter(status__in=wanted)
    return [job_out(j) for j in jobs.distinct().order_by("-created_at")[:limit]]


@router.get("/jobs/{job_id}", response=JobDetailOut)
def get_job(request, job_id: UUID):
    return job_detail(services.get_job(request.user, job_id))


@router.post("/jobs/{job_id}/cancel", response=JobDetailOut)
def cancel_job(request, job_id: UUID):
    services.cancel_job(request.user, job_id)
    return job_detail(services.get_job(request.user, job_id))


@router.post("/jobs/{job_id}/retry", response=JobDetailOut)
def retry_job(request, job_id: UUID):
    services.retry_job(request.user, job_id)
    return job_detail(services.get_job(request.user, job_id))


@router.post("/jobs/{job_id}/actions", response={202: JobDetailOut})
def job_action(request, job_id: UUID, payload: ActionIn):
    services.request_action(request.user, job_id, payload.action)
    return Status(202, job_detail(services.get_job(request.user, job_id)))


@router.get("/jobs/{job_id}/events", response=EventsOut)
def job_events(request, job_id: UUID, since_step: int = Query(0, ge=0), max_points: int = Query(2000, ge=10, le=20000),
               log_lines: int = Query(200, ge=0, le=2000)):
    job = services.get_job(request.user, job_id)
    points = downsampled_loss_points(job, since_step=since_step, max_points=max_points)
    logs = list(job.logs.order_by("-id")[:log_lines])[::-1]
    return EventsOut(loss_points=[LossPointOut(step=p.step, loss=p.loss, lr=p.lr, at=p.at) for p in points],
                     logs=[LogLineOut(line=log.line, at=log.at) for log in logs])


def artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(id=artifact.uuid, kind=artifact.kind, filename=download_filename(artifact),
                       size_bytes=artifact.size_bytes, sha256=artifact.sha256, step=artifact.step,
                       prompt=artifact.prompt, url=artifact_url(artifact), created_at=artifact.created_at)


@router.get("/jobs/{job_id}/artifacts", response=list[ArtifactOut])
def job_artifacts(request, job_id: UUID):
    job = services.get_job(request.user, job_id)
    return [artifact_out(a) for a in job.artifacts.select_related("job")]


def _file_response(artifact: Artifact) -> FileResponse:
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / artifact.path).resolve()
    if root not in path.parents or not path.is_file():
        raise NotFound("That file is no longer stored.")
    return FileResponse(open(path, "rb"), as_attachment=artifact.kind != ArtifactKind.SAMPLE,
                        filename=download_filename(artifact))


@router.get("/jobs/{job_id}/artifacts/{artifact_id}/download")
def download_artifact(request, job_id: UUID, artifact_id: UUID):
    job = services.get_job(request.user, job_id)
    artifact = job.artifacts.filter(uuid=artifact_id).first()
    if artifact is None or artifact.kind == ArtifactKind.CHECKPOINT:
        raise NotFound()
    return _file_response(artifact)


@router.get("/jobs/{job_id}/weights")
def download_weights(request, job_id: UUID, layout: str = "kohya"):
    kinds = {"kohya": ArtifactKind.LORA_KOHYA, "diffusers": ArtifactKind.LORA_DIFFUSERS,
             "remote": ArtifactKind.LORA_REMOTE}
    if layout not in kinds:
        raise InvalidInput("layout must be kohya, diffusers or remote",
                           [{"loc": ["layout"], "msg": "kohya, diffusers or remote"}])
    job = services.get_job(request.user, job_id)
    artifact = job.artifacts.filter(kind=kinds[layout]).order_by("-created_at").first()
    if artifact is None:
        raise NotFound("This job has no LoRA file yet.")
    return _file_response(artifact)



@router.get("/jobs/{job_id}/loss.csv")
def loss_csv(request, job_id: UUID):
    """Every stored loss point: step, loss, smoothed loss (the mean of the last 50), learning rate, time."""
    job = services.get_job(request.user, job_id)
    response = HttpResponse(job_exports.loss_csv(job), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{job_exports.job_file_stem(job)}-loss.csv"'
    return response


@router.get("/jobs/{job_id}/tensorboard.zip")
def tensorboard_log(request, job_id: UUID):
    """A TensorBoard log of the job (loss, smoothed loss, learning rate, samples): unzip, then
    `tensorboard --logdir .`"""
    job = services.get_job(request.user, job_id)
    name, data = job_exports.tensorboard_zip(job)
    response = HttpResponse(data, content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@router.post("/webhooks/replicate/{config_id}", auth=None, response=WebhookReceiptOut)
def replicate_webhook(request, config_id: UUID):
    """Replicate's deliveries for one backend: no user, so the account's webhook signature is the
    authentication (a wrong, missing or stale one is a 401 that says nothing about any job)."""
    return WebhookReceiptOut(result=replicate_hooks.receive(config_id, request.headers, request.body))
