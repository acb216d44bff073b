"""Splitting a folder or a zip into the API's upload requests, and counting the bytes sent.

A caption file (`name.txt`) must travel in the same request as its image (`name.png`): the server
pairs them by name within one request. Two files with the same stem never share a request, so images
of the same name in different subfolders keep their own captions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
CAPTION_SUFFIX = ".txt"
# Django refuses more than 100 files in one request (DATA_UPLOAD_MAX_NUMBER_FILES); stay well under.
MAX_FILES_PER_REQUEST = 40
MAX_BYTES_PER_REQUEST = 16 * 1024 * 1024


@dataclass(frozen=True)
class UploadProgress:
    """Passed to a progress callback as bytes go out: a whole upload, over all its requests."""

    sent_bytes: int
    total_bytes: int
    files_done: int
    files_total: int

    @property
    def fraction(self) -> float:
        return self.sent_bytes / self.total_bytes if self.total_bytes else 1.0


ProgressCallback = Callable[[UploadProgress], None]


def folder_groups(folder: Path) -> list[list[Path]]:
    """Each image with its caption file (if any), in a stable order; orphan captions on their own so
    the server reports them."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not _hidden(p.relative_to(folder)))
    captions = {p.with_suffix(""): p for p in files if p.suffix.lower() == CAPTION_SUFFIX}
    groups: list[list[Path]] = []
    for path in files:
        if path.suffix.lower() == CAPTION_SUFFIX:
            continue
        group = [path]
        caption = captions.pop(path.with_suffix(""), None)
        if caption is not None:
            group.append(caption)
        groups.append(group)
    groups.extend([orphan] for orphan in captions.values())
    return groups


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def request_batches(groups: list[list[Path]], max_files: int = MAX_FILES_PER_REQUEST,
                    max_bytes: int = MAX_BYTES_PER_REQUEST) -> Iterator[list[Path]]:
    """Groups packed into requests of at most `max_files` files and `max_bytes` (a group larger than
    that goes alone), never two files with the same stem in one request."""
    batch: list[Path] = []
    size = 0
    stems: set[str] = set()
    for group in groups:
        group_size = sum(p.stat().st_size for p in group)
        group_stems = {p.stem.lower() for p in group}
        if batch and (len(batch) + len(group) > max_files or size + group_size > max_bytes or stems & group_stems):
            yield batch
            batch, size, stems = [], 0, set()
        batch.extend(group)
        size += group_size
        stems |= group_stems
    if batch:
        yield batch


class CountingReader:
    """A binary file whose reads report how many bytes have gone out (httpx reads uploads in chunks)."""

    def __init__(self, handle: IO[bytes], on_bytes: Callable[[int], None]):
        self._handle = handle
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        if data:
            self._on_bytes(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self._handle.close()


class ProgressBar:
    """A one-line text progress bar for uploads: pass it as `progress=`."""

    def __init__(self, label: str = "upload", stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self._last = -1

    def __call__(self, progress: UploadProgress) -> None:
        percent = int(progress.fraction * 100)
        if percent == self._last and progress.sent_bytes < progress.total_bytes:
            return
        self._last = percent
        filled = int(progress.fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {percent:3d}% {_size(progress.sent_bytes)}/"
                          f"{_size(progress.total_bytes)}, {progress.files_done}/{progress.files_total} files")
        if progress.files_done == progress.files_total and progress.sent_bytes >= progress.total_bytes:
            self.stream.write("\n")
        self.stream.flush()


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{count / 1e3:.0f} kB"
