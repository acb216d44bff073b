"""Content-addressed image files: one file per sha256 under MEDIA_ROOT/blobs/, shared by datasets.

Writers and the collector both take the blob row's lock, so a file is never removed while a new
image starts to reference it. Files are written to a temporary name and renamed into place, so a
reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from datasets_app.models import BlobHold, DatasetImage, StoredBlob

logger = logging.getLogger(__name__)


def blob_names(sha256: str, extension: str) -> tuple[str, str]:
    """Storage-relative names of the original and its thumbnail."""
    folder = f"blobs/{sha256[:2]}"
    return f"{folder}/{sha256}.{extension}", f"{folder}/{sha256}.thumb.jpg"


def media_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / name


def write_atomically(name: str, data: bytes) -> None:
    target = media_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def lock_or_create_blob(sha256: str, fmt: str, extension: str, data: bytes, thumbnail: bytes
                        ) -> tuple[StoredBlob, bool]:
    """The locked blob row for these bytes, writing its files when they are not on disk yet.

    Must run inside a transaction. Returns (blob, created); a caller whose transaction fails after a
    `created` blob must call `discard_new_blob` before leaving the transaction.
    """
    blob = StoredBlob.objects.select_for_update().filter(sha256=sha256).first()
    created = blob is None
    if created:
        original, thumb = blob_names(sha256, extension)
        blob = StoredBlob.objects.create(sha256=sha256, file=original, thumbnail=thumb, format=fmt,
                                         size_bytes=len(data))
    # Also heals a row whose files went missing (a crash between a collector's unlink and commit).
    if not media_path(blob.file.name).exists():
        write_atomically(blob.file.name, data)
    if blob.thumbnail and not media_path(blob.thumbnail.name).exists():
        write_atomically(blob.thumbnail.name, thumbnail)
    return blob, created


def discard_new_blob(blob: StoredBlob) -> None:
    """Remove the files of a blob whose creating transaction is about to roll back."""
    for name in (blob.file.name, blob.thumbnail.name):
        if name:
            media_path(name).unlink(missing_ok=True)


def release_blobs(blob_ids: list[int]) -> None:
    """Delete blobs (rows and files) that no image references any more."""
    for blob_id in blob_ids:
        with transaction.atomic():
            blob = StoredBlob.objects.select_for_update().filter(pk=blob_id).first()
            if blob is None or DatasetImage.objects.filter(blob_id=blob_id).exists() or blob.holds.exists():
                continue
            # Files go first, under the row lock: a concurrent writer waits for the lock, finds no row,
            # and writes the files again itself.
            discard_new_blob(blob)
            blob.delete()


def hold_blobs(sha256s: list[str], holder: str) -> int:
    """Keep these blobs' bytes until `release_holds(holder)`; returns how many were held."""
    blobs = list(StoredBlob.objects.filter(sha256__in=set(sha256s)).values_list("pk", flat=True))
    BlobHold.objects.bulk_create([BlobHold(blob_id=pk, holder=holder) for pk in blobs], ignore_conflicts=True)
    return len(blobs)


def release_holds(holder: str) -> None:
    """Drop a holder's holds; blobs no image and no other holder needs are deleted after commit."""
    blob_ids = list(BlobHold.objects.filter(holder=holder).values_list("blob_id", flat=True))
    BlobHold.objects.filter(holder=holder).delete()
    transaction.on_commit(lambda: release_blobs(blob_ids))


@receiver(post_delete, sender=DatasetImage)
def _collect_blob(sender, instance: DatasetImage, **kwargs) -> None:
    # After commit: if the delete rolls back, the blob is still referenced and must stay.
    blob_id = instance.blob_id
    transaction.on_commit(lambda: release_blobs([blob_id]))
