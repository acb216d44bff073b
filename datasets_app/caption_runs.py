"""Caption runs: starting one over a dataset, cancelling, undoing, saving each image's result
exactly once, and the read model the API, the page and the websocket share."""

from __future__ import annotations

import dataclasses

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from datasets_app import caption_lifecycle as lifecycle
from datasets_app.caption_providers import get_usable
from datasets_app.captioning import postprocess, simple
from datasets_app.captioning.base import FatalError
from datasets_app.captions import record_caption, undo_batch
from datasets_app.models import (
    CaptionMode,
    CaptionRun,
    CaptionRunItem,
    CaptionSource,
    Dataset,
    DatasetImage,
    ItemStatus,
    ProviderType,
    RunStatus,
)
from lorasite.accounts import access
from lorasite.accounts.models import Role
from lorasite.errors import Conflict, InvalidInput

MAX_PROMPT_CHARS = 4000
MAX_STEPS = 20


def steps_from_json(raw: list[dict]) -> list[postprocess.Step]:
    known = {f.name for f in dataclasses.fields(postprocess.Step)}
    steps = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict) or "op" not in entry or set(entry) - known:
            raise InvalidInput("Each post-processing step is an object with `op` and its parameters.",
                               [{"loc": ["postprocess", index], "msg": "invalid step"}])
        steps.append(postprocess.Step(**entry))
    return steps


def steps_to_json(steps: list[postprocess.Step]) -> list[dict]:
    defaults = postprocess.Step(op="")
    return [{k: v for k, v in dataclasses.asdict(s).items() if k == "op" or v != getattr(defaults, k)}
            for s in steps]


def combine(mode: str, old: str, new: str) -> str | None:
    """The caption an image ends up with; None leaves it (an image captioned meanwhile, in
    `uncaptioned` mode)."""
    old = old.strip()
    if mode == CaptionMode.UNCAPTIONED:
        return None if old else new
    if mode == CaptionMode.PREPEND and old:
        return f"{new}, {old}"
    if mode == CaptionMode.APPEND and old:
        return f"{old}, {new}"
    return new


def selected_images(dataset: Dataset, mode: str) -> QuerySet[DatasetImage]:
    images = DatasetImage.objects.filter(dataset=dataset)
    if mode == CaptionMode.UNCAPTIONED:
        images = images.filter(caption="")
    return images.order_by("id")


def start_run(dataset: Dataset, user, provider_ref: str, prompt: str | None, mode: str,
              steps: list[postprocess.Step], send: bool = True) -> CaptionRun:
    """Check everything that can be checked here, record the run and its images, send it to the
    captioning queue (`send=False`: the caller runs it itself, as `manage.py caption_dataset` does)."""
    from datasets_app.tasks import caption_run_actor
    from lorasite.broker import send_on_commit

    provider = get_usable(dataset.team, provider_ref)
    prompt = provider.prompt if prompt is None else prompt
    if len(prompt) > MAX_PROMPT_CHARS or "\x00" in prompt:
        raise InvalidInput(f"The prompt may have at most {MAX_PROMPT_CHARS} characters.",
                           [{"loc": ["prompt"], "msg": "too long"}])
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"At most {MAX_STEPS} post-processing steps.", [{"loc": ["postprocess"], "msg": "too many"}])
    postprocess.check_steps(steps, postprocess.Context(trigger=dataset.trigger_word))
    if provider.type == ProviderType.SIMPLE:
        try:
            simple.check_template(prompt or simple.DEFAULT_TEMPLATE)
        except FatalError as exc:
            raise InvalidInput(exc.message, [{"loc": ["prompt"], "msg": exc.message}]) from None
    with transaction.atomic():
        # One active run per dataset: two would race for the same images' captions.
        Dataset.objects.select_for_update().only("pk").get(pk=dataset.pk)
        if CaptionRun.objects.filter(dataset=dataset, status__in=lifecycle.ACTIVE).exists():
            raise Conflict("This dataset is being captioned already; wait for that run or cancel it.")
        image_ids = list(selected_images(dataset, mode).values_list("pk", flat=True))
        if not image_ids:
            raise InvalidInput("Every image already has a caption: choose mode overwrite, prepend or append."
                               if mode == CaptionMode.UNCAPTIONED else "This dataset has no images yet.",
                               [{"loc": ["mode"], "msg": "no images to caption"}])
        run = CaptionRun.objects.create(
            dataset=dataset, provider=provider, provider_name=provider.name, provider_type=provider.type,
            model=provider.model, prompt=prompt, mode=mode, postprocess=steps_to_json(steps),
            total=len(image_ids), created_by=user, heartbeat_at=timezone.now())
        CaptionRunItem.objects.bulk_create([CaptionRunItem(run=run, image_id=pk) for pk in image_ids],
                                           batch_size=1000)
        lifecycle.submit(run)
        if send:
            send_on_commit(caption_run_actor, str(run.uuid))
    return run


def cancel_run(run: CaptionRun) -> CaptionRun:
    return lifecycle.request_cancel(run)


def undo_run(run: CaptionRun, user) -> dict:
    """Put back what each image had before the run, unless it was edited since."""
    if run.status in lifecycle.ACTIVE:
        raise Conflict("Cancel the run, or let it finish, before undoing it.")
    if run.undone_at is not None:
        raise Conflict("This run was undone already.")
    if not CaptionRunItem.objects.filter(run=run, caption__isnull=False).exists():
        raise Conflict("This run changed no caption; there is nothing to undo.")
    result = undo_batch(run.dataset, run.uuid, user)
    CaptionRun.objects.filter(pk=run.pk).update(undone_at=timezone.now())
    return result


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one image, for the progress message."""

    image_uuid: str
    caption: str | None = None
    error: str | None = None


def save_result(run: CaptionRun, item_id: int, image_uuid: str, generated: str, model: str,
                steps: list[postprocess.Step], context: postprocess.Context) -> Outcome | None:
    """Save one image's caption if its item is still pending (None otherwise: another delivery of
    this run saved it already, so no second version is written)."""
    text = postprocess.apply_steps(generated, steps, context)
    with transaction.atomic():
        item = CaptionRunItem.objects.select_for_update().filter(pk=item_id, status=ItemStatus.PENDING).first()
        if item is None:
            return None
        if not text.strip():
            return _fail(run, item, image_uuid, "post-processing left an empty caption")
        trigger_step = any(s.op == "trigger" for s in steps)

        def final(old: str) -> str | None:
            combined = combine(run.mode, old, text)
            if combined is not None and trigger_step and combined != text:
                combined = postprocess.trigger_first(combined, context.trigger)  # once, in the whole caption
            return combined

        caption, current = record_caption(item.image_id, final, None, CaptionSource.PROVIDER,
                                          f"{run.provider_name}: {model}"[:200], run.uuid)
        item.status, item.caption, item.finished_at = ItemStatus.DONE, caption, timezone.now()
        if caption is None and run.mode == CaptionMode.UNCAPTIONED and current:
            item.error = "captioned by someone else meanwhile; left as it was"
        item.save(update_fields=["status", "caption", "finished_at", "error"])
        CaptionRun.objects.filter(pk=run.pk).update(done=F("done") + 1)
    return Outcome(image_uuid, caption=current)


def save_failure(run: CaptionRun, item_id: int, image_uuid: str, error: str) -> Outcome | None:
    with transaction.atomic():
        item = CaptionRunItem.objects.select_for_update().filter(pk=item_id, status=ItemStatus.PENDING).first()
        if item is None:
            return None
        return _fail(run, item, image_uuid, error)


def _fail(run: CaptionRun, item: CaptionRunItem, image_uuid: str, error: str) -> Outcome:
    item.status, item.error, item.finished_at = ItemStatus.FAILED, error[:1000], timezone.now()
    item.save(update_fields=["status", "error", "finished_at"])
    CaptionRun.objects.filter(pk=run.pk).update(failed=F("failed") + 1)
    return Outcome(image_uuid, error=item.error)


def get_run(user, run_id, needed: Role = Role.VIEWER) -> CaptionRun:
    return access.get_visible(CaptionRun.objects.select_related("dataset__team"), user, needed=needed,
                              team_field="dataset__team", uuid=run_id)


def run_out(run: CaptionRun, errors: int = 50) -> dict:
    failures = (CaptionRunItem.objects.filter(run=run, status=ItemStatus.FAILED)
                .select_related("image").order_by("id")[:errors])
    return {
        "id": run.uuid, "dataset": run.dataset.uuid, "status": run.status, "provider": run.provider_name,
        "provider_type": run.provider_type, "model": run.model, "prompt": run.prompt, "mode": run.mode,
        "postprocess": run.postprocess, "total": run.total, "done": run.done, "failed": run.failed,
        "percent": round(100 * (run.done + run.failed) / run.total, 1) if run.total else 100.0,
        "error": run.error or None,
        "errors": [{"image": f.image.uuid, "name": f.image.original_name, "error": f.error} for f in failures],
        "created_at": run.created_at, "started_at": run.started_at, "finished_at": run.finished_at,
        "undone_at": run.undone_at,
    }


def runs_for(dataset: Dataset, limit: int = 50) -> list[CaptionRun]:
    return list(CaptionRun.objects.filter(dataset=dataset).select_related("dataset").order_by("-id")[:limit])


def images_of_run(run: CaptionRun) -> QuerySet[DatasetImage]:
    """The images this run captioned (for the page's filter and review mode)."""
    return DatasetImage.objects.filter(caption_run_items__run=run, caption_run_items__status=ItemStatus.DONE)


__all__ = ["RunStatus", "cancel_run", "get_run", "run_out", "runs_for", "save_failure", "save_result",
           "start_run", "undo_run"]
