"""Preparing an image for a captioner: decoded once, orientation applied, downscaled, sent as JPEG,
so a 24-megapixel photo never goes over the wire whole."""

from __future__ import annotations

from PIL import Image

from datasets_app.imaging import convert_format, normalize_mode, open_image

DEFAULT_MAX_SIDE = 768


def prepare_image(data: bytes | str, max_side: int = DEFAULT_MAX_SIDE, quality: int = 90) -> bytes:
    """JPEG bytes of the image with its longest side at most `max_side` (never enlarged)."""
    import io

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    img = normalize_mode(open_image(source))
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return convert_format(img, "JPEG", quality=quality)
