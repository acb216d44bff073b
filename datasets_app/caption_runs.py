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
from datasets_app.captions import record_captions, undo_batch
from datasets_app.models import (
    Caption,
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
from lorasite.broker import get_broker, send_on_commit
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
            # By name: the actor's module runs the runs, which use this module (no import circle).
            send_on_commit(get_broker().get_actor("caption_run_actor"), str(run.uuid))
    return run


def cancel_run(run: CaptionRun) -> CaptionRun:
    return lifecycle.request_cancel(run)


def undo_run(run: CaptionRun, user) -> dict:
    """Put back what each image had before the run, unless it was edited since."""
    if run.status in lifecycle.ACTIVE:
        raise Conflict("Cancel the run, or let it finish, before undoing it.")
    if run.undone_at is not None:
        raise Conflict("This run was undone already.")
    if not Caption.objects.filter(batch=run.uuid, image__dataset=run.dataset).exists():
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


@dataclasses.dataclass(frozen=True)
class Answer:
    """A provider's answer for one item: its caption text and model, or the error."""

    item_id: int
    image_uuid: str
    text: str = ""
    model: str = ""
    error: str | None = None


def save_answers(run: CaptionRun, answers: list[Answer], steps: list[postprocess.Step],
                 context: postprocess.Context) -> list[Outcome]:
    """Save a batch of answers in one transaction (one commit for all, not one per image). Each is
    saved only while its item is pending, under the item's row lock: an item another delivery of
    this run saved already is skipped, so no image gets a second version from one run."""
    now = timezone.now()
    with transaction.atomic():
        image_of = dict(CaptionRunItem.objects.select_for_update().order_by("pk")
                        .filter(pk__in=[a.item_id for a in answers], status=ItemStatus.PENDING)
                        .values_list("pk", "image_id"))
        fresh: list[Answer] = []
        for answer in answers:  # the same item twice in one batch is saved once
            if answer.item_id in image_of and all(a.item_id != answer.item_id for a in fresh):
                fresh.append(answer)
        texts, failures = {}, {}
        for answer in fresh:
            if answer.error is not None:
                failures[answer.item_id] = answer.error
                continue
            text = postprocess.apply_steps(answer.text, steps, context)
            if text.strip():
                texts[image_of[answer.item_id]] = text
            else:
                failures[answer.item_id] = "post-processing left an empty caption"
        models = {image_of[a.item_id]: a.model for a in fresh if image_of[a.item_id] in texts}
        current, errors = _write(run, texts, models, steps, context)
        outcomes, done_ids, left_alone = [], [], []
        for answer in fresh:
            image_id = image_of[answer.item_id]
            error = failures.get(answer.item_id) or errors.get(image_id)
            if error is not None:
                failures[answer.item_id] = error[:1000]
                outcomes.append(Outcome(answer.image_uuid, error=error[:1000]))
                continue
            done_ids.append(answer.item_id)
            if run.mode == CaptionMode.UNCAPTIONED and current[image_id] != texts[image_id]:
                left_alone.append(answer.item_id)
            outcomes.append(Outcome(answer.image_uuid, caption=current[image_id]))
        items = CaptionRunItem.objects
        if done_ids:
            items.filter(pk__in=done_ids).update(status=ItemStatus.DONE, finished_at=now)
        if left_alone:
            items.filter(pk__in=left_alone).update(error="captioned by someone else meanwhile; left as it was")
        for item_id, error in failures.items():
            items.filter(pk=item_id).update(status=ItemStatus.FAILED, error=error, finished_at=now)
        if fresh:
            CaptionRun.objects.filter(pk=run.pk).update(done=F("done") + len(done_ids),
                                                        failed=F("failed") + len(failures))
    return outcomes


def _write(run: CaptionRun, texts: dict[int, str], models: dict[int, str], steps, context):
    """Each image's final caption from its current one, as new versions naming the run."""
    trigger_step = any(s.op == "trigger" for s in steps)

    def final(image_id: int, old: str) -> str | None:
        text = texts[image_id]
        combined = combine(run.mode, old, text)
        if combined is not None and trigger_step and combined != text:
            combined = postprocess.trigger_first(combined, context.trigger)  # once, in the whole caption
        return combined

    if not texts:
        return {}, {}
    # Versions name the provider and model; a run has one model, so one label for the batch.
    model = next(iter(models.values()), run.model)
    return record_captions(list(texts), final, None, CaptionSource.PROVIDER,
                           f"{run.provider_name}: {model}"[:200], run.uuid)


def save_result(run: CaptionRun, item_id: int, image_uuid: str, generated: str, model: str,
                steps: list[postprocess.Step], context: postprocess.Context) -> Outcome | None:
    """One answer (see save_answers); None when the item was saved already."""
    saved = save_answers(run, [Answer(item_id, image_uuid, generated, model)], steps, context)
    return saved[0] if saved else None


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


__all__ = ["RunStatus", "cancel_run", "get_run", "run_out", "runs_for", "save_answers", "save_result",
           "start_run", "undo_run"]
