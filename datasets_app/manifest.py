"""Manifests (a dataset as JSON), recreating a dataset from one, and streamed zip exports."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath

from datasets_app.ingest import Entry, ImageMetadata, IngestReport, ingest_entries
from datasets_app.models import Dataset, DatasetImage, ReviewState
from datasets_app.services import create_dataset
from datasets_app.storage import media_path
from lorasite.errors import InvalidInput

MANIFEST_FORMAT = "lorasite-dataset"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
EXPORT_FORMATS = ("kohya", "lorasite")


def build_manifest(dataset: Dataset) -> dict:
    images = DatasetImage.objects.filter(dataset=dataset).select_related("blob").order_by("id")
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "dataset": {"id": str(dataset.uuid), "name": dataset.name, "description": dataset.description,
                    "trigger_word": dataset.trigger_word, "default_resolution": dataset.default_resolution},
        "images": [{
            "id": str(i.uuid), "file": f"images/{i.sha256}{PurePosixPath(i.blob.file.name).suffix}",
            "original_name": i.original_name, "sha256": i.sha256, "size_bytes": i.size_bytes,
            "width": i.width, "height": i.height, "format": i.format, "caption": i.caption,
            "review_state": i.review_state, "repeats": i.repeats,
        } for i in images],
    }


def parse_manifest(raw: bytes | str | dict) -> dict:
    """The manifest, checked enough that the import cannot crash half-way on a bad field."""
    try:
        manifest = raw if isinstance(raw, dict) else json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("The manifest is not valid JSON.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InvalidInput(f"Not a lorasite dataset manifest (expected \"format\": \"{MANIFEST_FORMAT}\").")
    if manifest.get("version") != MANIFEST_VERSION:
        raise InvalidInput(f"Unsupported manifest version {manifest.get('version')!r}.")
    if not isinstance(manifest.get("dataset"), dict) or not isinstance(manifest.get("images"), list):
        raise InvalidInput("The manifest needs a \"dataset\" object and an \"images\" list.")
    for index, image in enumerate(manifest["images"]):
        if not isinstance(image, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(image.get("sha256", ""))):
            raise InvalidInput(f"Manifest image {index} has no valid sha256.")
    return manifest


def import_manifest(team, user, manifest: dict, entries: Iterable[Entry], name: str = "",
                    progress=None) -> tuple[Dataset, IngestReport]:
    """Create a dataset from a manifest and the files it lists (matched by their sha256, not names)."""
    fields = manifest["dataset"]
    dataset = create_dataset(team, user, name or str(fields.get("name", "")),
                             description=str(fields.get("description", "")),
                             trigger_word=str(fields.get("trigger_word", "")),
                             default_resolution=_int(fields.get("default_resolution"), 512, 64, 4096))
    metadata = {}
    for image in manifest["images"]:
        state = image.get("review_state")
        metadata[image["sha256"]] = ImageMetadata(
            caption=str(image.get("caption") or "")[:10_000],
            review_state=state if state in ReviewState.values else ReviewState.PENDING,
            repeats=_int(image.get("repeats"), 1, 1, 1000),
            original_name=str(image.get("original_name") or "")[:255],
        )
    entries = [e for e in entries if PurePosixPath(e.path).name != MANIFEST_NAME]
    report = ingest_entries(dataset, entries, user=user, metadata=metadata, progress=progress)
    found = {a["sha256"] for a in report.added} | {d["sha256"] for d in report.duplicates}
    for sha in metadata.keys() - found:
        report.rejected.append({"name": sha, "reason": "listed in the manifest but its file was not provided"})
    return dataset, report


def _int(value, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(value)))
    except (TypeError, ValueError):
        return default


# --- streamed exports -----------------------------------------------------------------------------


class _Pipe:
    """A write-only file for zipfile whose bytes are collected and handed to a streaming response."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def _stream_zip(members: Iterator[tuple[str, bytes, bool]]) -> Iterator[bytes]:
    pipe = _Pipe()
    # Images are already compressed: store them; deflate only the text.
    with zipfile.ZipFile(pipe, "w") as archive:  # type: ignore[arg-type]
        for name, data, compress in members:
            archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
            yield pipe.drain()
    yield pipe.drain()


def kohya_folder(repeats: int, trigger_word: str) -> str:
    trigger = re.sub(r"[^\w\- ]+", "", trigger_word).strip() or "dataset"
    return f"{repeats}_{trigger}"


def export_kohya(dataset: Dataset) -> Iterator[bytes]:
    """Approved images with `.txt` captions in `{repeats}_{trigger}/` folders (kohya_ss, ai-toolkit)."""
    images = (DatasetImage.objects.filter(dataset=dataset, review_state=ReviewState.APPROVED)
              .select_related("blob").order_by("id"))

    def members() -> Iterator[tuple[str, bytes, bool]]:
        used: set[str] = set()
        for image in images.iterator(chunk_size=500):
            folder = kohya_folder(image.repeats, dataset.trigger_word)
            stem = _unique_stem(folder, image, used)
            extension = PurePosixPath(image.blob.file.name).suffix
            yield f"{folder}/{stem}{extension}", media_path(image.blob.file.name).read_bytes(), False
            yield f"{folder}/{stem}.txt", image.caption.encode(), True

    return _stream_zip(members())


def export_lorasite(dataset: Dataset) -> Iterator[bytes]:
    """Every image plus manifest.json: `import_dataset` or `POST /api/datasets/import` recreate it."""
    manifest = build_manifest(dataset)
    images = DatasetImage.objects.filter(dataset=dataset).select_related("blob").order_by("id")

    def members() -> Iterator[tuple[str, bytes, bool]]:
        yield MANIFEST_NAME, json.dumps(manifest, indent=1).encode(), True
        for entry, image in zip(manifest["images"], images.iterator(chunk_size=500), strict=True):
            yield entry["file"], media_path(image.blob.file.name).read_bytes(), False

    return _stream_zip(members())


def _unique_stem(folder: str, image: DatasetImage, used: set[str]) -> str:
    stem = re.sub(r"[^\w\-. ]+", "_", PurePosixPath(image.original_name).stem).strip(" .") or image.sha256[:12]
    candidate = stem
    if f"{folder}/{candidate}" in used:
        candidate = f"{stem}-{image.sha256[:8]}"
    used.add(f"{folder}/{candidate}")
    return candidate
