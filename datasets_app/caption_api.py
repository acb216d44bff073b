"""Auto-captioning endpoints: providers (listed with live availability), starting a run over a
dataset, following, cancelling and undoing it."""

from __future__ import annotations

from uuid import UUID

from ninja import Router, Status

from datasets_app import caption_providers, caption_runs, queries
from datasets_app.captioning import postprocess
from datasets_app.models import CaptionProvider
from datasets_app.schemas import (
    CaptionProviderIn,
    CaptionProviderOut,
    CaptionRunIn,
    CaptionRunOut,
    UndoOut,
)
from lorasite.accounts import access
from lorasite.accounts.models import Role

router = Router(tags=["captioning"])


def provider_out(provider: CaptionProvider, availability=None) -> dict:
    return {
        "id": provider.uuid, "team": provider.team.slug if provider.team_id else None, "name": provider.name,
        "type": provider.type, "base_url": provider.base_url, "model": provider.model, "prompt": provider.prompt,
        "api_key_env": provider.api_key_env, "concurrency": provider.concurrency,
        "timeout_seconds": provider.timeout_seconds, "max_image_side": provider.max_image_side,
        "enabled": provider.enabled, "available": availability.ok if availability else None,
        "availability": availability.detail if availability else "not checked",
    }


@router.get("/caption-providers", response=list[CaptionProviderOut])
def list_providers(request, team: str | None = None, check: bool = True):
    """The team's providers and the global ones; `check=false` skips the live availability check."""
    team_obj = access.get_team(request.user, team)
    providers = list(caption_providers.usable_by(team_obj).select_related("team"))
    if not check:
        return [provider_out(p) for p in providers]
    return [provider_out(p, a) for p, a in caption_providers.with_availability(providers)]


@router.post("/caption-providers", response={201: CaptionProviderOut})
def create_provider(request, payload: CaptionProviderIn):
    team_obj = access.get_team(request.user, payload.team, needed=Role.ADMIN)
    provider = caption_providers.create_provider(team_obj, **payload.dict(exclude={"team"}))
    return Status(201, provider_out(provider))


@router.delete("/caption-providers/{provider_id}", response={204: None})
def delete_provider(request, provider_id: UUID):
    provider = access.get_visible(CaptionProvider.objects.select_related("team"), request.user,
                                  needed=Role.ADMIN, uuid=provider_id)
    provider.delete()
    return Status(204, None)


@router.post("/datasets/{dataset_id}/caption", response={201: CaptionRunOut})
def start_caption_run(request, dataset_id: UUID, payload: CaptionRunIn):
    """Caption the dataset in the background; follow it at GET /caption-runs/{id} or on the
    dataset's websocket. Each caption is a new version; POST /caption-runs/{id}/undo reverts them."""
    dataset = queries.get_dataset(request.user, dataset_id, needed=Role.MEMBER)
    if payload.postprocess is None:
        steps = [s for s in postprocess.DEFAULT_STEPS if s.op != "trigger" or dataset.trigger_word]
    else:
        steps = [postprocess.Step(**s.dict()) for s in payload.postprocess]
    run = caption_runs.start_run(dataset, request.user, payload.provider, payload.prompt, payload.mode, steps)
    return Status(201, caption_runs.run_out(run))


@router.get("/datasets/{dataset_id}/caption-runs", response=list[CaptionRunOut])
def list_caption_runs(request, dataset_id: UUID):
    dataset = queries.get_dataset(request.user, dataset_id)
    return [caption_runs.run_out(run, errors=5) for run in caption_runs.runs_for(dataset)]


@router.get("/caption-runs/{run_id}", response=CaptionRunOut)
def get_caption_run(request, run_id: UUID):
    return caption_runs.run_out(caption_runs.get_run(request.user, run_id))


@router.post("/caption-runs/{run_id}/cancel", response=CaptionRunOut)
def cancel_caption_run(request, run_id: UUID):
    run = caption_runs.cancel_run(caption_runs.get_run(request.user, run_id, needed=Role.MEMBER))
    return caption_runs.run_out(run)


@router.post("/caption-runs/{run_id}/undo", response=UndoOut)
def undo_caption_run(request, run_id: UUID):
    run = caption_runs.get_run(request.user, run_id, needed=Role.MEMBER)
    return caption_runs.undo_run(run, request.user)



