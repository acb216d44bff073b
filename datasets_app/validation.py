"""Deciding by content whether bytes are an image we accept, and how big an archive may be.

Django-free (Pillow + stdlib) so the folder importer, the upload API and the trainer agree. Every
refusal is an `Rejected` whose message is safe to show a user: it never contains a server path.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import stat
import struct
import threading
import zipfile
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from datasets_app.imaging import make_thumbnail
from datasets_app.near_duplicates import signature

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff"}
ACCEPTED_LABEL = "PNG, JPEG, WebP, BMP, GIF or TIFF"
THUMBNAIL_SIZE = 256
_ORIENTATION_TAG = 0x0112

# Magic numbers of archive and compressed formats: a member that is one of these is a nested archive.
_ARCHIVE_MAGIC = (
    (0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"), (0, b"\x1f\x8b", "gzip"), (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"), (0, b"7z\xbc\xaf\x27\x1c", "7z"), (0, b"Rar!\x1a\x07", "rar"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"), (257, b"ustar", "tar"),
)


class Rejected(Exception):
    """A file (or archive member) we refuse; `reason` is shown to the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 64_000_000
    # Pixels this process decodes at once, over all uploads (see PixelBudget).
    decode_budget_pixels: int = 64_000_000
    max_archive_bytes: int = 1024 * 1024 * 1024
    max_archive_members: int = 10_000
    max_archive_total_bytes: int = 4 * 1024 * 1024 * 1024
    max_member_ratio: int = 200
    # Below this size a high compression ratio cannot hurt anyone (a flat-colour BMP compresses 1000:1).
    ratio_check_above_bytes: int = 1024 * 1024
    max_caption_bytes: int = 64 * 1024


@dataclass
class InspectedImage:
    format: str
    width: int
    height: int
    thumbnail_jpeg: bytes
    phash: str  # near_duplicates.signature of the thumbnail

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def archive_kind(head: bytes) -> str | None:
    """'zip', 'gzip', 'tar', ... when `head` (the first 512 bytes) starts an archive, else None."""
    for offset, magic, kind in _ARCHIVE_MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


def check_size(size: int, limits: Limits, what: str = "file") -> None:
    """An image must have bytes and stay under the limit."""
    if size == 0:
        raise Rejected("empty file (0 bytes)")
    check_max_size(size, limits, what)


def check_max_size(size: int, limits: Limits, what: str = "file") -> None:
    """Before reading anything: under the limit (an empty file may be a blank caption, as kohya writes them)."""
    if size > limits.max_file_bytes:
        raise Rejected(f"{what} is {human_bytes(size)}; the limit is {human_bytes(limits.max_file_bytes)}")


class PixelBudget:
    """Bounds the pixels decoded at once in this process: a decoded image holds about 4 bytes a pixel
    (twice while it is rotated), so parallel uploads of large images would otherwise multiply
    memory. A decode waits until its pixels fit; one larger than the whole budget runs alone."""

    def __init__(self) -> None:
        self._used = 0
        self._ready = threading.Condition()
        self.peak = 0

    @contextlib.contextmanager
    def hold(self, pixels: int, budget: int):
        with self._ready:
            self._ready.wait_for(lambda: self._used == 0 or self._used + pixels <= budget)
            self._used += pixels
            self.peak = max(self.peak, self._used)
        try:
            yield
        finally:
            with self._ready:
                self._used -= pixels
                self._ready.notify_all()


DECODES = PixelBudget()


def inspect_image(data: bytes, limits: Limits) -> InspectedImage:
    """Validate `data` as an accepted image and make its thumbnail and perceptual signature.

    The pixel limit is checked from the header, before any pixel is decoded, so a small file that
    claims to be 100k×100k never allocates its pixels. A full decode then catches truncation.
    """
    check_size(len(data), limits)
    kind = archive_kind(data[:512])
    if kind is not None:
        raise Rejected(f"a {kind} archive inside an archive; nested archives are not accepted, unpack it first")
    fmt = "image"
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as probe:
            fmt, (width, height) = probe.format, probe.size
            _check_pixels(width, height, limits)
            probe.verify()
        with DECODES.hold(width * height, limits.decode_budget_pixels):
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as img:
                img.load()
                image = _apply_orientation(img)
            thumb = make_thumbnail(image, THUMBNAIL_SIZE)
            width, height = image.width, image.height
            del image
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected(f"not a {ACCEPTED_LABEL} image (checked by content, not by name)") from None
    except Image.DecompressionBombError:
        raise Rejected(f"image has too many pixels; the limit is {limits.max_pixels / 1e6:g} megapixels "
                       "(decompression bomb protection)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, ZeroDivisionError,
            MemoryError, struct.error):
        # Pillow reports broken data through many exception types; all mean the same to a user.
        raise Rejected(f"truncated or corrupt {fmt} data") from None
    if fmt not in ACCEPTED_FORMATS:  # pragma: no cover - `formats=` already restricts this
        raise Rejected(f"format {fmt} is not accepted; use {ACCEPTED_LABEL}")
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    return InspectedImage(format=fmt, width=width, height=height,
                          thumbnail_jpeg=buffer.getvalue(), phash=signature(thumb))


def _check_pixels(width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise Rejected("image has no pixels")
    if width * height > limits.max_pixels:
        raise Rejected(f"image is {width}×{height} ({width * height / 1e6:.1f} megapixels); the limit is "
                       f"{limits.max_pixels / 1e6:g} megapixels (decompression bomb protection)")


def _apply_orientation(img: Image.Image) -> Image.Image:
    """The first frame with its EXIF orientation applied, as imaging.open_image does; skips the copy
    that exif_transpose makes when there is nothing to rotate (most files), which ingest feels."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    orientation = img.getexif().get(_ORIENTATION_TAG, 1)
    if orientation in (None, 1):
        return img.copy() if img.format in ("GIF", "TIFF") else img
    return ImageOps.exif_transpose(img)


# --- archives -------------------------------------------------------------------------------------


def open_archive(fileobj, size: int, limits: Limits) -> zipfile.ZipFile:
    """Open a zip after checking its own size, member count and declared total size.

    Declared sizes can be trusted as upper bounds because zipfile never returns more bytes than a
    member declares (and fails its CRC check if the data disagrees).
    """
    if size > limits.max_archive_bytes:
        raise Rejected(f"archive is {human_bytes(size)}; the limit is {human_bytes(limits.max_archive_bytes)}")
    try:
        archive = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise Rejected("not a readable zip archive (corrupt or truncated)") from None
    members = archive.infolist()
    if len(members) > limits.max_archive_members:
        archive.close()
        raise Rejected(f"archive has {len(members)} members; the limit is {limits.max_archive_members}")
    total = sum(m.file_size for m in members)
    if total > limits.max_archive_total_bytes:
        archive.close()
        raise Rejected(f"archive would unpack to {human_bytes(total)}; the limit is "
                       f"{human_bytes(limits.max_archive_total_bytes)} (zip bomb protection)")
    return archive


def safe_member_name(info: zipfile.ZipInfo) -> str:
    """The member's normalised relative path; Rejected for absolute paths, '..', links and devices."""
    raw = info.filename.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise Rejected("absolute path in archive; member skipped")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Rejected("path with '..' in archive; member skipped")
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise Rejected("symbolic link in archive; member skipped")
    # Many zip writers set permission bits only (no file type); those are ordinary files.
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise Rejected("special file in archive; member skipped")
    return posixpath.join(*parts) if parts else ""


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> bytes:
    """The member's bytes, after its size, encryption and compression ratio pass."""
    if info.flag_bits & 0x1:
        raise Rejected("encrypted archive member; not supported")
    check_max_size(info.file_size, limits, what="member")
    if info.file_size > limits.ratio_check_above_bytes and info.compress_size and \
            info.file_size / info.compress_size > limits.max_member_ratio:
        raise Rejected(f"member compresses {info.file_size // info.compress_size}:1; the limit is "
                       f"{limits.max_member_ratio}:1 (zip bomb protection)")
    try:
        with archive.open(info) as member:
            data = member.read(limits.max_file_bytes + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
        raise Rejected("corrupt archive member (bad data or checksum)") from None
    check_max_size(len(data), limits, what="member")
    return data


def decode_caption(data: bytes, limits: Limits) -> str:
    if len(data) > limits.max_caption_bytes:
        raise Rejected(f"caption file is {human_bytes(len(data))}; the limit is "
                       f"{human_bytes(limits.max_caption_bytes)}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Rejected("caption file is not UTF-8 text") from None
    return " ".join(text.split())
