"""Image preprocessing shared by the portal previews and the LoRA trainer.

This module is deliberately pure (Pillow + stdlib, no Django, no torch) so the
exact same code decides how an upload is decoded, colour-converted, bucketed and
cropped both when the portal shows a "how will this be cropped" preview and
when the trainer builds its batches. If the two ever disagreed, users would be
shown one crop and trained on another.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageOps

__all__ = [
    "center_crop_box",
    "convert_format",
    "crop_preview",
    "make_bucket_set",
    "make_thumbnail",
    "nearest_bucket",
    "normalize_mode",
    "open_image",
    "resize_and_crop",
]

# Modes whose pixels carry transparency that must be flattened onto a background.
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# High bit-depth single-channel modes that Pillow cannot scale to 8 bits by itself
# (a plain convert("L") clips instead of scaling, turning most 16-bit images white).
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def open_image(path_or_file: str | Path | IO[bytes]) -> Image.Image:
    """Open an image file and return it with its EXIF orientation applied.

    Phones store pictures sideways plus an EXIF "Orientation" tag; without
    honouring it a portrait photo trains as a landscape one. Animated formats
    (GIF, APNG, WebP) yield their first frame. The pixel data is fully loaded so
    the underlying file can be closed by the caller.
    """
    with Image.open(path_or_file) as img:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        img.load()
        # exif_transpose always returns a new image, detaching us from the file.
        out = ImageOps.exif_transpose(img)
    if out is None:  # pragma: no cover - only when in_place=True
        raise ValueError("exif_transpose returned nothing")
    return out


def _wide_to_l(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image down to 8-bit ``L``."""
    lo, hi = img.getextrema()
    if img.mode == "F":
        # Float images are conventionally 0..1; fall back to min-max otherwise.
        if lo >= 0.0 and hi <= 1.0:
            scale, offset = 255.0, 0.0
        else:
            span = (hi - lo) or 1.0
            scale, offset = 255.0 / span, -lo * 255.0 / span
        return img.point(lambda v: v * scale + offset).convert("L")
    as_i = img if img.mode == "I" else img.convert("I")
    # 16-bit files (the common case) map 0..65535 onto 0..255 by dividing by 257.
    divisor = 257.0 if hi > 255 else 1.0
    if hi > 65535:
        divisor = hi / 255.0
    return as_i.point(lambda v: v / divisor).convert("L")


def normalize_mode(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Return an 8-bit RGB version of ``img``.

    Transparent pixels are composited onto ``background`` (white by default,
    which is what people see in a browser); palette, greyscale, CMYK and
    high-bit-depth images are converted with their values scaled, not clipped.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in _WIDE_MODES:
        return _wide_to_l(img).convert("RGB")
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    # CMYK, L, 1, YCbCr, LAB, HSV ... Pillow knows the RGB conversion.
    return img.convert("RGB")


def make_bucket_set(
    resolution: int, min_side: int = 256, max_side: int | None = None, step: int = 64
) -> list[tuple[int, int]]:
    """Aspect-ratio buckets (width, height) for a training resolution, kohya style.

    Every bucket has sides that are multiples of ``step``, an area of at most
    ``resolution**2`` and sides within [``min_side``, ``max_side``]
    (``max_side`` defaults to ``2 * resolution``). For each width only the
    tallest allowed height is kept, and any bucket that fits entirely inside
    another one is dropped, so the set is maximal. ``min_side`` is clamped to
    the resolution so tiny resolutions still get at least the square bucket.
    The result is sorted from tallest to widest aspect ratio.
    """
    if resolution <= 0 or step <= 0:
        raise ValueError("resolution and step must be positive")
    if resolution < step:
        raise ValueError(f"resolution {resolution} is smaller than the bucket step {step}")
    max_side = resolution * 2 if max_side is None else max_side
    min_side = max(step, (min(min_side, resolution) // step) * step)
    max_side = max(min_side, (max_side // step) * step)
    max_area = resolution * resolution

    candidates: set[tuple[int, int]] = set()
    for width in range(min_side, max_side + 1, step):
        height = min(max_side, (max_area // width) // step * step)
        if height >= min_side:
            candidates.add((width, height))
            candidates.add((height, width))

    maximal = [
        (w, h)
        for (w, h) in candidates
        if not any(w2 >= w and h2 >= h and (w2, h2) != (w, h) for (w2, h2) in candidates)
    ]
    return sorted(maximal, key=lambda b: (b[0] / b[1], b[0]))


def nearest_bucket(width: int, height: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Pick the bucket whose aspect ratio is closest to ``width/height``.

    Distance is measured on the log of the ratio so 2:1 and 1:2 are equally far
    from square. Ties go to the larger bucket (less upscaling detail lost).
    """
    if not buckets:
        raise ValueError("no buckets to choose from")
    if width <= 0 or height <= 0:
        raise ValueError("image size must be positive")
    target = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1]))


def _cover_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int, float]:
    """Smallest scaled size that covers the target box, plus the scale used."""
    scale = max(target_w / width, target_h / height)
    # Rounding may land one pixel short of the target; never go below it.
    new_w = max(target_w, round(width * scale))
    new_h = max(target_h, round(height * scale))
    return new_w, new_h, scale


def resize_and_crop(
    img: Image.Image,
    target_w: int,
    target_h: int,
    crop: str = "center",
    rng: random.Random | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Scale ``img`` so it covers ``target_w x target_h``, then crop to exactly that size.

    Returns the cropped image and ``(crop_top, crop_left)`` in the *scaled*
    image's pixel coordinates, which is what SDXL's micro-conditioning
    (``crops_coords_top_left``) expects. ``crop="random"`` draws the offset from
    ``rng`` (a ``random.Random``) so the trainer can make it reproducible.
    """
    if crop not in ("center", "random"):
        raise ValueError(f"crop must be 'center' or 'random', not {crop!r}")
    new_w, new_h, _ = _cover_size(img.width, img.height, target_w, target_h)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    if crop == "random":
        rng = rng or random.Random()
        left = rng.randint(0, new_w - target_w)
        top = rng.randint(0, new_h - target_h)
    else:
        left = (new_w - target_w) // 2
        top = (new_h - target_h) // 2
    return img.crop((left, top, left + target_w, top + target_h)), (top, left)


def center_crop_box(
    width: int, height: int, target_w: int, target_h: int
) -> tuple[float, float, float, float]:
    """The (left, top, right, bottom) region of the *original* image a center crop keeps.

    Mirrors :func:`resize_and_crop` with ``crop="center"`` but in original pixel
    coordinates, for drawing an overlay on an uploaded image.
    """
    new_w, new_h, _ = _cover_size(width, height, target_w, target_h)
    left = (new_w - target_w) // 2
    top = (new_h - target_h) // 2
    sx, sy = new_w / width, new_h / height
    return (left / sx, top / sy, (left + target_w) / sx, (top + target_h) / sy)


def bucket_step_for(resolution: int) -> int:
    """Bucket granularity used by the trainer for a given resolution.

    Real SD models need latent sides divisible by 8 (pixel multiples of 64);
    the tiny test models only need multiples of 16, and 64-pixel steps would
    leave a 64 px resolution with a single bucket.
    """
    return 64 if resolution >= 256 else 16


def bucket_min_side_for(resolution: int) -> int:
    """Smallest bucket side used by the trainer (kohya's 256, halved for tiny resolutions)."""
    return min(256, max(bucket_step_for(resolution), resolution // 2))


def crop_preview(
    width: int, height: int, resolution: int, bucketing: bool, step: int | None = None
) -> dict[str, Any]:
    """Describe how an image of ``width x height`` will be resized and cropped for training.

    Returns ``{"target_width", "target_height", "scale", "crop_box", "kept_fraction"}``
    where ``crop_box`` is (left, top, right, bottom) in original coordinates and
    ``kept_fraction`` is the share of the original area that survives the crop.
    With ``bucketing`` the target is the nearest aspect bucket (same bucket set
    the trainer uses), otherwise a ``resolution`` square.
    """
    if bucketing:
        step = step or bucket_step_for(resolution)
        buckets = make_bucket_set(resolution, min_side=bucket_min_side_for(resolution), step=step)
        target_w, target_h = nearest_bucket(width, height, buckets)
    else:
        target_w = target_h = resolution
    _, _, scale = _cover_size(width, height, target_w, target_h)
    box = center_crop_box(width, height, target_w, target_h)
    kept = ((box[2] - box[0]) * (box[3] - box[1])) / float(width * height)
    return {
        "target_width": target_w,
        "target_height": target_h,
        "scale": scale,
        "crop_box": box,
        "kept_fraction": min(1.0, kept),
    }


_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "JPG": "JPEG", "WEBP": "WEBP"}


def convert_format(img: Image.Image, fmt: str, quality: int = 95) -> bytes:
    """Encode ``img`` as PNG, JPEG or WebP and return the bytes.

    JPEG has no alpha channel, so images are flattened to RGB first; PNG and
    WebP keep transparency when present.
    """
    key = fmt.upper()
    if key not in _FORMATS:
        raise ValueError(f"unsupported format {fmt!r}; use PNG, JPEG or WebP")
    pil_fmt = _FORMATS[key]
    if pil_fmt == "JPEG" or img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = (
            normalize_mode(img)
            if img.mode not in ("RGBA", "LA") or pil_fmt == "JPEG"
            else img.convert("RGBA")
        )
    buf = io.BytesIO()
    params: dict[str, Any] = {}
    if pil_fmt in ("JPEG", "WEBP"):
        params["quality"] = quality
    img.save(buf, format=pil_fmt, **params)
    return buf.getvalue()


def make_thumbnail(img: Image.Image, size: int = 256) -> Image.Image:
    """An RGB copy of ``img`` that fits in a ``size x size`` box, aspect preserved."""
    thumb = normalize_mode(img).copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    return thumb
