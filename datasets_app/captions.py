"""Captions: setting one (a new version each time), dataset-wide caption tools, and undoing a tool run.

These functions are the only writers of `DatasetImage.caption`, the copy of the current text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import QuerySet

from datasets_app.captioning import postprocess
from datasets_app.models import Caption, CaptionSource, Dataset, DatasetImage
from lorasite.errors import InvalidInput

MAX_CAPTION_CHARS = 10_000


def set_caption(image: DatasetImage, text: str, user=None, source: str = CaptionSource.MANUAL,
                provider_model: str = "", batch: uuid.UUID | None = None) -> Caption | None:
    """Make `text` the image's current caption, keeping the previous one as history.

    Returns the new Caption, or None when the text is unchanged (no empty versions in the history).
    """
    caption, current = record_caption(image.pk, lambda old: text, user, source, provider_model, batch)
    image.caption = current
    return caption


def record_caption(image_id: int, compute: Callable[[str], str | None], user=None,
                   source: str = CaptionSource.MANUAL, provider_model: str = "",
                   batch: uuid.UUID | None = None) -> tuple[Caption | None, str]:
    """Lock the image, derive the new text from its current caption (`compute` returns None to leave
    it), and write it as a new version. Returns (the new Caption or None, the caption now current).
    The lock makes "read the old caption, write the new one" safe against concurrent edits."""
    with transaction.atomic():
        locked = DatasetImage.objects.select_for_update().only("pk", "caption").get(pk=image_id)
        text = compute(locked.caption)
        if text is None or text == locked.caption:
            return None, locked.caption
        if len(text) > MAX_CAPTION_CHARS:
            raise InvalidInput(f"A caption may have at most {MAX_CAPTION_CHARS} characters.",
                               [{"loc": ["caption"], "msg": "too long"}])
        Caption.objects.filter(image_id=image_id, is_current=True).update(is_current=False)
        caption = Caption.objects.create(image_id=image_id, text=text, source=source, provider_model=provider_model,
                                         created_by=user, batch=batch, is_current=True)
        DatasetImage.objects.filter(pk=image_id).update(caption=text)
    return caption, text


def record_captions(image_ids: list[int], compute: Callable[[int, str], str | None], user=None,
                    source: str = CaptionSource.MANUAL, provider_model: str = "",
                    batch: uuid.UUID | None = None) -> tuple[dict[int, str], dict[int, str]]:
    """`record_caption` for many images in a handful of queries (a caption run saves what arrived
    in one go). Returns ({image id: caption now current}, {image id: error}); images whose text is
    unchanged are in the first dict with their old caption and get no version."""
    errors: dict[int, str] = {}
    with transaction.atomic():
        # pk order: every bulk locker (tool runs, caption runs) takes the rows in the same order.
        locked = dict(DatasetImage.objects.select_for_update().filter(pk__in=image_ids).order_by("pk")
                      .values_list("pk", "caption"))
        current, changed = {}, {}
        for pk in image_ids:
            if pk not in locked:
                errors[pk] = "the image was deleted"
                continue
            text = compute(pk, locked[pk])
            if text is None or text == locked[pk]:
                current[pk] = locked[pk]
            elif len(text) > MAX_CAPTION_CHARS:
                errors[pk] = f"the caption would have more than {MAX_CAPTION_CHARS} characters"
            else:
                current[pk] = changed[pk] = text
        if changed:
            Caption.objects.filter(image_id__in=list(changed), is_current=True).update(is_current=False)
            Caption.objects.bulk_create([
                Caption(image_id=pk, text=text, source=source, provider_model=provider_model, created_by=user,
                        batch=batch, is_current=True) for pk, text in changed.items()])
            # One statement, many rows: bulk_update's CASE expression costs more than the write.
            table = connection.ops.quote_name(DatasetImage._meta.db_table)  # the model's, not input
            with connection.cursor() as cursor:
                cursor.executemany(f"UPDATE {table} SET caption = %s WHERE id = %s",  # noqa: S608
                                   [(text, pk) for pk, text in changed.items()])
    return current, errors


def caption_history(image: DatasetImage) -> QuerySet[Caption]:
    return Caption.objects.filter(image=image).select_related("created_by").order_by("-id")


def restore_caption(image: DatasetImage, caption_id: int, user) -> Caption | None:
    """Make an older version current again, as a new version (the history only grows)."""
    old = Caption.objects.filter(image=image, pk=caption_id).first()
    if old is None:
        raise InvalidInput("That caption version does not belong to this image.")
    return set_caption(image, old.text, user, source=old.source, provider_model=old.provider_model)


# Tool name (the API's and the page's) → post-processing step; the functions are postprocess's.
TOOL_STEPS = {
    "add_trigger": "trigger", "replace": "replace", "clean_whitespace": "clean", "truncate": "truncate_chars",
    "append_tags": "append_tags", "strip_boilerplate": "strip_boilerplate", "dedupe_tags": "dedupe_tags",
    "underscores": "underscores", "prefix": "prefix", "suffix": "suffix", "truncate_words": "truncate_words",
    "truncate_tokens": "truncate_tokens",
}
TOOLS = tuple(TOOL_STEPS)


@dataclass(frozen=True)
class ToolRequest:
    """One dataset-wide caption edit. Fields not used by `tool` are ignored."""

    tool: str
    find: str = ""
    replace: str = ""
    max_length: int = 0
    tags: str = ""
    review_state: str = ""
    regex: bool = False
    text: str = ""
    max_words: int = 0
    max_tokens: int = 0

    def step(self) -> postprocess.Step:
        if self.tool not in TOOL_STEPS:
            raise InvalidInput(f"Unknown caption tool {self.tool!r}; use one of {', '.join(TOOLS)}.",
                               [{"loc": ["tool"], "msg": "unknown"}])
        return postprocess.Step(op=TOOL_STEPS[self.tool], find=self.find, replace=self.replace, regex=self.regex,
                                text=self.text, tags=self.tags, max_words=self.max_words,
                                max_tokens=self.max_tokens, max_length=self.max_length)


def apply_tool(request: ToolRequest, caption: str, trigger_word: str) -> str:
    """The caption after the tool; pure, so a preview and the real run agree."""
    return postprocess.apply_step(caption, request.step(), postprocess.Context(trigger=trigger_word))


def run_tool(dataset: Dataset, request: ToolRequest, user) -> dict:
    """Apply a tool to every image (optionally of one review state); each change is a new version
    tagged with one batch id, which `undo_batch` reverts."""
    apply_tool(request, "", dataset.trigger_word)  # bad parameters fail before anything changes
    batch = uuid.uuid4()
    images = DatasetImage.objects.filter(dataset=dataset).only("pk", "caption").order_by("pk")
    if request.review_state:
        images = images.filter(review_state=request.review_state)
    with transaction.atomic():
        # Bulk writes: a tool run touches thousands of images, and a version per image per query
        # would take seconds. The row locks keep concurrent single edits from interleaving.
        changed = []
        for image in images.select_for_update():
            new = apply_tool(request, image.caption, dataset.trigger_word)
            if new != image.caption:
                image.caption = new
                changed.append(image)
        if changed:
            Caption.objects.filter(image__in=changed, is_current=True).update(is_current=False)
            Caption.objects.bulk_create([
                Caption(image=image, text=image.caption, source=CaptionSource.TOOL, created_by=user,
                        batch=batch, is_current=True) for image in changed])
            DatasetImage.objects.bulk_update(changed, ["caption"], batch_size=500)
    return {"batch": str(batch) if changed else None, "changed": len(changed)}


def undo_batch(dataset: Dataset, batch: uuid.UUID, user) -> dict:
    """Put back the caption each image had before a tool run, unless it was edited again since."""
    restored = skipped = 0
    with transaction.atomic():
        for caption in Caption.objects.filter(batch=batch, image__dataset=dataset).select_related("image"):
            if not caption.is_current:
                skipped += 1
                continue
            previous = (Caption.objects.filter(image=caption.image, pk__lt=caption.pk).order_by("-pk")
                        .values_list("text", flat=True).first()) or ""
            set_caption(caption.image, previous, user, source=CaptionSource.MANUAL)
            restored += 1
    if not restored and not skipped:
        raise InvalidInput("No caption tool run with that id in this dataset.")
    return {"restored": restored, "skipped_edited_since": skipped}


