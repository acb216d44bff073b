"""The two archives a Replicate training moves: the dataset zip we upload, the weights tar we download.

The zip holds each image with a same-name `.txt` caption (what the Flux trainer reads) and, for
trainers that want one, a `caption.csv` (what the SDXL trainer reads). It is deterministic: the same
items give the same bytes, so its sha256 names the dataset.

The tar comes from the outside world, so nothing in it is trusted: every entry is checked (no absolute
paths, no `..`, no links or devices, sizes within limits) before anything is written, and only the one
LoRA file is written, under a name we choose. That file must then parse as safetensors (header,
dtypes, offsets), checked here without torch so a web or remote-queue node can do it.

No Django, no network: plain functions over paths, raising ArchiveError with a message for people.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LORA_NAME = "lora.safetensors"
# Fixed zip timestamps keep the archive (and its sha256) the same for the same dataset.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1024 * 1024
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
               "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class ArchiveError(ValueError):
    """An archive we cannot use; the message says which entry and why, for people."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what an archive may hold. The weights tar of a rank-128 Flux LoRA is ~1.3 GB."""

    max_download_bytes: int = 4 * 1024**3
    max_member_bytes: int = 2 * 1024**3
    max_total_bytes: int = 4 * 1024**3
    max_members: int = 10_000
    max_header_bytes: int = 100 * 1024**2  # a safetensors JSON header


@dataclass(frozen=True)
class DatasetZip:
    path: Path
    sha256: str
    image_count: int
    captioned_count: int
    names: tuple[str, ...]  # image names inside the zip, in order


@dataclass(frozen=True)
class ExtractedWeights:
    lora_path: Path
    tensors: dict[str, list[int]]  # tensor name -> shape, read from the safetensors header
    members: tuple[str, ...]  # every entry the archive listed (for the job log)


def _zip_stem(index: int, path: Path) -> str:
    # Our own names: unique, ASCII, no directories; the index keeps the dataset's order.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_")[:40] or "image"
    return f"{index:04d}_{stem}"


def zip_dataset(items: Iterable[tuple[Path | str, str]], target: Path, *, caption_csv: bool = False,
                max_bytes: int = 100 * 1024**2) -> DatasetZip:
    """Write the frozen dataset (image path, caption) into a zip at `target` for a trainer's input_images."""
    items = [(Path(path), (caption or "").strip()) for path, caption in items]
    if not items:
        raise ArchiveError("the dataset has no images")
    total = 0
    for path, _ in items:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ArchiveError(f"{path.name}: Replicate trainers read {', '.join(IMAGE_SUFFIXES)} images only")
        if not path.is_file():
            raise ArchiveError(f"{path.name}: the image file is missing from storage")
        total += path.stat().st_size
    if total > max_bytes:
        raise ArchiveError(f"the dataset is {total / 1024**2:.1f} MB; this backend uploads at most "
                           f"{max_bytes / 1024**2:.0f} MB (resize the images or raise the backend's limit)")
    if caption_csv and any(not caption for _, caption in items):
        raise ArchiveError("this trainer reads captions from caption.csv, so every image needs a caption")
    names, rows, captioned = [], [], 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        for index, (path, caption) in enumerate(items, start=1):
            stem = _zip_stem(index, path)
            name = stem + path.suffix.lower()
            # Images are already compressed: store them; deflate only the text.
            archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), path.read_bytes(), zipfile.ZIP_STORED)
            if caption:
                archive.writestr(zipfile.ZipInfo(f"{stem}.txt", _ZIP_TIME), caption.encode(), zipfile.ZIP_DEFLATED)
                captioned += 1
            names.append(name)
            rows.append((name, caption))
        if caption_csv:
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(("image_file", "caption"))
            writer.writerows(rows)
            archive.writestr(zipfile.ZipInfo("caption.csv", _ZIP_TIME), text.getvalue().encode(), zipfile.ZIP_DEFLATED)
    digest = hashlib.sha256()
    with target.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return DatasetZip(target, digest.hexdigest(), len(items), captioned, tuple(names))


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if "\\" in name or "\x00" in name:
        return "a path with a backslash or NUL"
    if ".." in PurePosixPath(name).parts:
        return "a path that climbs out with '..'"
    if member.issym() or member.islnk():
        return "a link"
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        return "a device or pipe"
    if not (member.isreg() or member.isdir()):
        return "not a regular file"
    return None


def _pick_lora(members: list[tarfile.TarInfo]) -> tarfile.TarInfo:
    candidates = [m for m in members if m.isreg() and m.name.lower().endswith(".safetensors")]
    named = [m for m in candidates if PurePosixPath(m.name).name == LORA_NAME]
    if len(named) == 1:
        return named[0]
    if len(candidates) == 1 and not named:
        return candidates[0]
    if not candidates:
        raise ArchiveError("the weights archive holds no .safetensors file")
    raise ArchiveError(f"the weights archive holds {len(candidates)} .safetensors files and no single "
                       f"{LORA_NAME}: {', '.join(m.name for m in candidates[:5])}")


def extract_lora(tar_path: Path, target_dir: Path, limits: ArchiveLimits | None = None) -> ExtractedWeights:
    """Check every entry of a weights tar, then write only its LoRA to `target_dir/lora.safetensors`."""
    limits = limits or ArchiveLimits()
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        with tarfile.open(tar_path, "r:*") as archive:
            for member in archive:
                if len(members) >= limits.max_members:
                    raise ArchiveError(f"the weights archive has more than {limits.max_members} entries")
                reason = _unsafe_reason(member)
                if reason:
                    raise ArchiveError(f"the weights archive was refused: {member.name!r} is {reason}")
                if member.size > limits.max_member_bytes:
                    raise ArchiveError(f"the weights archive was refused: {member.name!r} is "
                                       f"{member.size / 1024**2:.0f} MB, over the {limits.max_member_bytes / 1024**2:.0f} MB limit")
                total += member.size
                if total > limits.max_total_bytes:
                    raise ArchiveError(f"the weights archive unpacks to more than {limits.max_total_bytes / 1024**2:.0f} MB")
                members.append(member)
            chosen = _pick_lora(members)
            target_dir.mkdir(parents=True, exist_ok=True)
            destination = target_dir / LORA_NAME
            partial = target_dir / f".{LORA_NAME}.partial"
            source = archive.extractfile(chosen)
            if source is None:  # pragma: no cover - regular members always have a file object
                raise ArchiveError(f"{chosen.name!r} cannot be read from the weights archive")
            with source, partial.open("wb") as out:
                remaining = chosen.size
                while remaining > 0:
                    chunk = source.read(min(_CHUNK, remaining))
                    if not chunk:
                        raise ArchiveError("the weights archive is truncated")
                    out.write(chunk)
                    remaining -= len(chunk)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"the weights file is not a readable tar archive ({type(exc).__name__})") from exc
    try:
        tensors = check_safetensors(partial, limits.max_header_bytes)
    except ArchiveError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, destination)
    return ExtractedWeights(destination, tensors, tuple(m.name for m in members))


def check_safetensors(path: Path, max_header_bytes: int = 100 * 1024**2) -> dict[str, list[int]]:
    """Parse a safetensors header and check every tensor's dtype, shape and byte range; name -> shape."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ArchiveError("the LoRA file is too short to be safetensors")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(max_header_bytes, size - 8):
            raise ArchiveError("the LoRA file's safetensors header is larger than the file or the limit")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ArchiveError("the LoRA file's safetensors header is not JSON") from exc
    if not isinstance(header, dict):
        raise ArchiveError("the LoRA file's safetensors header is not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ArchiveError("the LoRA file's safetensors metadata must map names to strings")
    data_len = size - 8 - header_len
    shapes, ranges = {}, []
    for name, entry in header.items():
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"tensor {name!r} in the LoRA file has a malformed entry") from exc
        if dtype not in DTYPE_BYTES or not isinstance(shape, list) or not all(
                isinstance(d, int) and d >= 0 for d in shape):
            raise ArchiveError(f"tensor {name!r} in the LoRA file has an unknown dtype or a bad shape")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_len):
            raise ArchiveError(f"tensor {name!r} in the LoRA file points outside the file")
        if end - start != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ArchiveError(f"tensor {name!r} in the LoRA file has the wrong number of bytes for its shape")
        shapes[name] = shape
        ranges.append((start, end))
    if not shapes:
        raise ArchiveError("the LoRA file holds no tensors")
    ranges.sort()
    if any(prev_end > start for (_, prev_end), (start, _) in pairwise(ranges)):
        raise ArchiveError("tensors in the LoRA file overlap")
    return shapes
