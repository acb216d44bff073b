"""Getting images into a dataset: uploaded files, zip archives and folders, one file at a time.

Every file is validated by content and stored (batch.py) so that one bad file is reported and
skipped while the others go in, and a file that fails leaves no row and no bytes behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from datasets_app.batch import BatchWriter, Prepared
from datasets_app.models import Dataset, DatasetImage, ReviewState
from datasets_app.near_duplicates import Rule, Signature, is_near_duplicate
from datasets_app.near_duplicates import parse as parse_signature
from datasets_app.validation import (
    InspectedImage,
    Limits,
    Rejected,
    archive_kind,
    check_max_size,
    check_size,
    decode_caption,
    inspect_image,
    open_archive,
    read_member,
    safe_member_name,
)

logger = logging.getLogger(__name__)

KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")
# Written by macOS and Windows file managers into archives and folders; never images, never useful.
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def near_duplicate_rule() -> Rule:
    return Rule(edge_percent=settings.DATASET_NEAR_DUPLICATE_EDGE_PERCENT,
                colour_percent=settings.DATASET_NEAR_DUPLICATE_COLOUR_PERCENT)


def limits_from_settings() -> Limits:
    return Limits(
        max_file_bytes=settings.DATASET_MAX_FILE_BYTES,
        max_pixels=settings.DATASET_MAX_IMAGE_PIXELS,
        decode_budget_pixels=settings.DATASET_DECODE_BUDGET_PIXELS,
        max_archive_bytes=settings.DATASET_MAX_ARCHIVE_BYTES,
        max_archive_members=settings.DATASET_MAX_ARCHIVE_MEMBERS,
        max_archive_total_bytes=settings.DATASET_MAX_ARCHIVE_TOTAL_BYTES,
        max_member_ratio=settings.DATASET_MAX_MEMBER_RATIO,
    )


@dataclass
class Entry:
    """One file to ingest. `path` is relative ("folder/name.png") and used to pair captions and to
    read kohya folder names; `name` is what the report shows."""

    name: str
    path: str
    read: Callable[[], bytes]
    error: str | None = None


@dataclass
class ImageMetadata:
    """What a manifest knows about an image beyond its bytes."""

    caption: str = ""
    review_state: str = ReviewState.PENDING
    repeats: int = 1
    original_name: str = ""


@dataclass
class IngestReport:
    added: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"added": self.added, "duplicates": self.duplicates, "rejected": self.rejected}


def is_ignored(path: str) -> bool:
    parts = path.split("/")
    return "__MACOSX" in parts or parts[-1] in _IGNORED_NAMES or parts[-1].startswith("._")


def repeats_from_path(path: str) -> int:
    """Kohya layout: the nearest `10_trigger class/` folder above the file gives its repeats."""
    for part in reversed(path.split("/")[:-1]):
        match = KOHYA_FOLDER.match(part)
        if match and int(match.group(1)) > 0:
            return min(int(match.group(1)), 1000)
    return 1


def upload_entries(name: str, fileobj, size: int, limits: Limits, stack: contextlib.ExitStack) -> list[Entry]:
    """Entries for one uploaded file: itself, or the members of a zip archive."""
    head = fileobj.read(512)
    fileobj.seek(0)
    kind = archive_kind(head)
    if kind is None:
        def read() -> bytes:
            check_max_size(size, limits)
            return fileobj.read()
        return [Entry(name=name, path=Path(name).name, read=read)]
    if kind != "zip":
        return [Entry(name=name, path=name, read=_nothing, error=f"{kind} archives are not accepted; use zip")]
    try:
        archive = stack.enter_context(open_archive(fileobj, size, limits))
    except Rejected as exc:
        return [Entry(name=name, path=name, read=_nothing, error=exc.reason)]
    entries = []
    for info in archive.infolist():
        shown = f"{name}/{info.filename}"
        try:
            path = safe_member_name(info)
        except Rejected as exc:
            entries.append(Entry(name=shown, path=info.filename, read=_nothing, error=exc.reason))
            continue
        if info.is_dir() or not path or is_ignored(path):
            continue
        entries.append(Entry(name=shown, path=path,
                             read=lambda info=info: read_member(archive, info, limits)))
    return entries


def folder_entries(root: Path) -> list[Entry]:
    """Entries for every file under `root`, recursively; symbolic links are reported, not followed."""
    entries = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if is_ignored(relative) or (path.is_dir() and not path.is_symlink()):
            continue
        if path.is_symlink():
            entries.append(Entry(name=relative, path=relative, read=_nothing,
                                 error="symbolic link; not followed"))
        elif path.is_file():
            entries.append(Entry(name=relative, path=relative, read=lambda path=path: _read_file(path)))
    return entries


def _read_file(path: Path) -> bytes:
    check_max_size(path.stat().st_size, limits_from_settings())
    return path.read_bytes()


def _nothing() -> bytes:  # pragma: no cover - entries with an error are never read
    return b""


def ingest_entries(dataset: Dataset, entries: Iterable[Entry], user=None, limits: Limits | None = None,
                   metadata: dict[str, ImageMetadata] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> IngestReport:
    """Validate and store each entry; `name.txt` beside `name.png` becomes that image's caption.

    With `metadata` (a manifest import), images are matched to it by sha256 and files it does not
    list are rejected.
    """
    limits = limits or limits_from_settings()
    report = IngestReport()
    images, captions = _split_captions(list(entries))
    known = dict(DatasetImage.objects.filter(dataset=dataset).values_list("sha256", "uuid"))
    # (signature, the image's pk or its still-pending Prepared, uuid) for near-duplicate checks.
    signatures: list[tuple[Signature, object, object]] = [
        (signature, pk, uuid) for text, pk, uuid in
        DatasetImage.objects.filter(dataset=dataset).exclude(phash="").values_list("phash", "pk", "uuid")
        if (signature := parse_signature(text)) is not None]
    rule = near_duplicate_rule()
    used_captions: set[str] = set()

    def added(item: Prepared) -> None:
        image = item.image
        report.added.append({"id": str(image.uuid), "name": item.name, "sha256": image.sha256,
                             "width": image.width, "height": image.height, "format": image.format,
                             "caption": image.caption, "near_duplicate_of": item.near_uuid})

    def duplicate(item: Prepared) -> None:
        sha = item.image.sha256
        existing = DatasetImage.objects.filter(dataset=dataset, sha256=sha).values_list("uuid", flat=True).first()
        report.duplicates.append({"name": item.name, "sha256": sha, "existing_id": str(existing)})

    def failed(item: Prepared) -> None:
        report.rejected.append({"name": item.name, "reason": "unexpected error while reading this file"})

    writer = BatchWriter(added, duplicate, failed)
    for done, entry in enumerate(images, start=1):
        try:
            if entry.error:
                raise Rejected(entry.error)
            data = entry.read()
            check_size(len(data), limits)
            sha = hashlib.sha256(data).hexdigest()
            if sha in known:
                report.duplicates.append({"name": entry.name, "sha256": sha, "existing_id": str(known[sha])})
                used_captions.add(_caption_key(entry.path))
                continue
            if metadata is not None and sha not in metadata:
                raise Rejected("not listed in the manifest")
            inspected = inspect_image(data, limits)
            caption_key = _caption_key(entry.path)
            if metadata is not None:
                meta = metadata[sha]
            else:
                meta = ImageMetadata(caption=_caption_text(captions.get(caption_key), limits, report),
                                     repeats=repeats_from_path(entry.path),
                                     original_name=Path(entry.path).name)
            used_captions.add(caption_key)
            item = _prepare(dataset, user, entry.name, data, sha, inspected, meta)
            signature = parse_signature(inspected.phash)
            _flag_near_duplicate(item, signature, signatures, rule, writer)
            known[sha] = item.image.uuid
            signatures.append((signature, item, item.image.uuid))
            writer.add(item)
        except Rejected as exc:
            report.rejected.append({"name": entry.name, "reason": exc.reason})
        except Exception:
            # The outermost edge of one file: log it and let the rest of the upload continue.
            logger.exception("unexpected error ingesting %s", entry.name)
            report.rejected.append({"name": entry.name, "reason": "unexpected error while reading this file"})
        if progress:
            progress(done, len(images))
    writer.flush()
    for key, entry in captions.items():
        if key not in used_captions:
            report.rejected.append({"name": entry.name, "reason": "caption file with no image of the same name"})
    return report


def _flag_near_duplicate(item: Prepared, signature: Signature, signatures: list[tuple[Signature, object, object]],
                         rule: Rule, writer: BatchWriter) -> None:
    """Point `item` at the first earlier image it looks like. One still pending is written first (the
    row it points at must exist); one whose write failed has no row and is passed over."""
    for other, target, uuid in signatures:
        if not is_near_duplicate(signature, other, rule):
            continue
        if isinstance(target, Prepared):
            if writer.is_pending(target):
                writer.flush()
            if not target.stored:
                continue
            target = target.image.pk
        item.image.near_duplicate_of_id, item.near_uuid = target, str(uuid)
        return


def _split_captions(entries: list[Entry]) -> tuple[list[Entry], dict[str, Entry]]:
    images, captions = [], {}
    for entry in entries:
        if entry.path.lower().endswith(".txt") and not entry.error:
            captions[_caption_key(entry.path)] = entry
        else:
            images.append(entry)
    return images, captions


def _caption_key(path: str) -> str:
    return posixpath.splitext(path)[0]


def _caption_text(entry: Entry | None, limits: Limits, report: IngestReport) -> str:
    """The caption beside an image; a bad caption file is reported and the image goes in without it."""
    if entry is None:
        return ""
    try:
        return decode_caption(entry.read(), limits)
    except Rejected as exc:
        report.rejected.append({"name": entry.name, "reason": exc.reason})
        return ""


def _prepare(dataset: Dataset, user, name: str, data: bytes, sha: str, inspected: InspectedImage,
             meta: ImageMetadata) -> Prepared:
    reviewed = meta.review_state != ReviewState.PENDING
    image = DatasetImage(
        dataset=dataset, sha256=sha, phash=inspected.phash, width=inspected.width, height=inspected.height,
        format=inspected.format, size_bytes=len(data), original_name=meta.original_name[:255],
        review_state=meta.review_state, repeats=max(1, meta.repeats), caption=meta.caption,
        reviewed_by=user if reviewed else None, reviewed_at=timezone.now() if reviewed else None)
    return Prepared(name=name, data=data, inspected=inspected, image=image, caption_user=user)
