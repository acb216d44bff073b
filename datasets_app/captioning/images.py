"""Preparing an image for a captioner: orientation applied, downscaled to the longest side
allowed, sent as JPEG, so a 24-megapixel photo never goes over the wire whole."""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from datasets_app.imaging import convert_format, normalize_mode, open_image

DEFAULT_MAX_SIDE = 768
_EXIF_ORIENTATION = 0x0112


def prepare_image(data: bytes, max_side: int = DEFAULT_MAX_SIDE, quality: int = 90) -> bytes:
    """JPEG bytes of the image with its longest side at most `max_side` (never enlarged).

    A JPEG that is already small enough, upright and RGB/greyscale is sent as it is: decoding and
    re-encoding it would cost time and quality for nothing."""
    with Image.open(io.BytesIO(data)) as probe:
        orientation = probe.getexif().get(_EXIF_ORIENTATION, 1)
        if (probe.format == "JPEG" and max(probe.size) <= max_side and orientation == 1
                and probe.mode in ("RGB", "L")):
            return data
        if probe.format == "JPEG" and probe.mode in ("RGB", "L"):
            # Decode at a reduced DCT scale that still covers max_side on both axes: a 24 MP
            # photo then costs a few times less than a full decode.
            probe.draft(probe.mode, (max_side, max_side))
            probe.load()
            img = normalize_mode(ImageOps.exif_transpose(probe))
        else:
            img = None
    if img is None:
        img = normalize_mode(open_image(io.BytesIO(data)))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return convert_format(img, "JPEG", quality=quality)
