"""Writing validated images to the database and disk in batches, falling back to one file at a time.

A transaction per file costs a commit (a disk flush on Postgres) per image, which is about a third
of the time ingest takes; batching amortises it. If a batch fails, every file in it is retried on
its own, so one bad file still fails alone and leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from datasets_app.models import Caption, CaptionSource, DatasetImage
from datasets_app.storage import discard_new_blob, lock_or_create_blob
from datasets_app.validation import InspectedImage

logger = logging.getLogger(__name__)
BATCH_SIZE = 32


@dataclass
class Prepared:
    """A validated file and its unsaved row (its uuid is already set, so reports can name it)."""

    name: str
    data: bytes
    inspected: InspectedImage
    image: DatasetImage
    caption_user: object = None
    near_uuid: str | None = None
    stored: bool = False  # its row and files are committed (a failed write leaves a stale pk behind)


class BatchWriter:
    def __init__(self, on_added: Callable[[Prepared], None], on_duplicate: Callable[[Prepared], None],
                 on_failed: Callable[[Prepared], None], size: int = BATCH_SIZE):
        self.pending: list[Prepared] = []
        self.size = size
        self.on_added, self.on_duplicate, self.on_failed = on_added, on_duplicate, on_failed

    def add(self, item: Prepared) -> None:
        self.pending.append(item)
        if len(self.pending) >= self.size:
            self.flush()

    def is_pending(self, item: Prepared) -> bool:
        return any(p is item for p in self.pending)

    def flush(self) -> None:
        items, self.pending = self.pending, []
        if not items:
            return
        try:
            _write(items)
        except Exception:
            if len(items) == 1:
                self._report_failure(items[0])
                return
            for item in items:
                item.image.pk = None
                item.image._state.adding = True
                try:
                    _write([item])
                except Exception:
                    self._report_failure(item)
                else:
                    item.stored = True
                    self.on_added(item)
        else:
            for item in items:
                item.stored = True
                self.on_added(item)

    def _report_failure(self, item: Prepared) -> None:
        import sys

        if isinstance(sys.exc_info()[1], IntegrityError):
            # The same bytes arrived through a concurrent upload between our check and our insert.
            self.on_duplicate(item)
        else:
            logger.exception("unexpected error storing %s", item.name)
            self.on_failed(item)


def _write(items: list[Prepared]) -> None:
    with transaction.atomic():
        created = []
        try:
            # Locked in sha256 order so concurrent uploads take shared blob rows in the same order (no
            # deadlock); rows are inserted in upload order, which is the order people see.
            for item in sorted(items, key=lambda i: i.image.sha256):
                blob, new = lock_or_create_blob(item.image.sha256, item.inspected.format,
                                                item.inspected.extension, item.data,
                                                item.inspected.thumbnail_jpeg)
                if new:
                    created.append(blob)
                item.image.blob = blob
            DatasetImage.objects.bulk_create([i.image for i in items])
            Caption.objects.bulk_create([
                Caption(image=i.image, text=i.image.caption, source=CaptionSource.IMPORT, created_by=i.caption_user)
                for i in items if i.image.caption])
        except BaseException:
            # Still inside the transaction, so no other writer can have picked these blobs up yet.
            for blob in created:
                discard_new_blob(blob)
            raise
