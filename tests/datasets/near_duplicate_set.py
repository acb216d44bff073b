"""A labelled set for near-duplicate detection, generated with Pillow on every run (no files).

Groups of images: each base picture (the 12 demo shapes, single shapes moved or resized, drawn
scenes, photo-like pictures, textures) with the copies a user makes by accident and expects us to
notice (re-encodes, PNG↔JPEG, resizes, small crops, a slight brightness change). Two images of the same group must match. Images of
different groups must not: other shapes, colours and scenes, and mirrored pictures, which are
their own group (a mirror is a deliberate edit, often made to balance a pose; see docs/datasets.md);
only clearly lopsided pictures are mirrored, since a nearly symmetric one mirrored is the same picture.
Pairs of two copies in one group are left out: two 5% crops from opposite sides are 10% apart, and
no one labels that pair either way. Every other pair of the set is labelled and scored.

Used by tests/datasets/test_near_duplicates.py and benchmarks/near_duplicates.py.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from datasets_app.demo import SHAPES, draw_shape
from datasets_app.near_duplicates import Rule, is_near_duplicate, parse
from datasets_app.validation import Limits, inspect_image

PALETTE = [(220, 40, 40), (40, 170, 70), (40, 80, 220), (240, 200, 30), (140, 60, 180), (245, 245, 245),
           (20, 20, 20), (250, 140, 20), (30, 190, 200), (230, 90, 160), (120, 80, 40), (128, 128, 128)]
# Transform name -> category; the recall target covers the "reencode" and "resize" categories.
TRANSFORMS = {
    "jpeg-q95": "reencode", "jpeg-q75": "reencode", "jpeg-q60": "reencode", "png": "reencode",
    "resize-50": "resize", "resize-75": "resize", "resize-150": "resize", "resize-200": "resize",
    "crop-3-all-sides": "crop", "crop-5-one-side": "crop", "crop-5-corner": "crop",
    "brightness-90": "brightness", "brightness-110": "brightness",
}
TARGET_CATEGORIES = ("reencode", "resize")


@dataclass(frozen=True)
class Sample:
    name: str  # "photo-03/jpeg-q60"
    group: str  # the base picture's name: samples of one group are near-duplicates of each other
    kind: str  # "demo", "drawn" or "photo"
    transform: str  # "original", "mirrored" or a key of TRANSFORMS
    data: bytes


def encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        img.save(buffer, format=fmt, quality=quality)
    else:  # the same pixels at any level; zlib's default level made generating the set 3× slower
        img.save(buffer, format=fmt, compress_level=1)
    return buffer.getvalue()


def drawn_scene(rng: random.Random) -> tuple[Image.Image, bool]:
    """One to four flat shapes (and sometimes stripes) on a flat background, like a diagram or icon,
    and whether it is clearly lopsided: no stripes (mirrored stripes are the same stripes shifted)
    and the shapes' area-weighted centre at least 15% of the width away from the middle."""
    w, h = rng.choice([(128, 128), (160, 120), (200, 200), (256, 192), (300, 300), (96, 144)])
    background = rng.choice(PALETTE)
    img = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(img)
    striped = rng.random() < 0.25
    if striped:
        stripe = rng.choice([c for c in PALETTE if c != background])
        step = rng.randint(max(6, w // 12), max(8, w // 4))
        for x in range(rng.randint(0, step), w, step * 2):
            draw.rectangle([x, 0, x + step // 2, h], fill=stripe)
    area = moment = 0.0
    for _ in range(rng.randint(1, 4)):
        colour = rng.choice([c for c in PALETTE if c != background])
        x0, y0 = rng.randint(0, w * 2 // 3), rng.randint(0, h * 2 // 3)
        x1, y1 = min(w, x0 + rng.randint(w // 6, w // 2)), min(h, y0 + rng.randint(h // 6, h // 2))
        kind = rng.choice(["ellipse", "rectangle", "triangle", "line"])
        area += (x1 - x0) * (y1 - y0)
        moment += (x1 - x0) * (y1 - y0) * (x0 + x1) / 2
        if kind == "ellipse":
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == "rectangle":
            draw.rectangle([x0, y0, x1, y1], fill=colour)
        elif kind == "triangle":
            draw.polygon([(x0, y1), (x1, y1), (rng.randint(x0, x1), y0)], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=max(3, w // 25))
    return img, not striped and abs(moment / area - w / 2) >= 0.15 * w


def single_shapes() -> Iterator[tuple[str, Image.Image]]:
    """The demo's hard case taken further: one shape, the same colours, moved or resized."""
    for index, (box, shape) in enumerate([
            ((10, 10, 60, 60), "ellipse"), ((68, 10, 118, 60), "ellipse"), ((10, 68, 60, 118), "ellipse"),
            ((39, 39, 89, 89), "ellipse"), ((14, 14, 114, 114), "ellipse"), ((44, 44, 84, 84), "rectangle"),
            ((10, 40, 118, 88), "rectangle"), ((40, 10, 88, 118), "rectangle")]):
        img = Image.new("RGB", (128, 128), PALETTE[2])
        draw = ImageDraw.Draw(img)
        getattr(draw, shape)(box, fill=PALETTE[3])
        yield f"single-{index:02d}", img


def photo_like(rng: random.Random, noise: Image.Image) -> Image.Image:
    """A photo-like picture: a tinted gradient at a random angle, blurred blobs and sensor-like noise
    (after benchmarks/ingest.py::make_jpegs)."""
    w, h = rng.choice([(320, 320), (384, 288), (288, 384), (400, 300)])
    gradient = Image.linear_gradient("L").rotate(rng.choice([0, 90, 180, 270]) + rng.uniform(-30, 30),
                                                 resample=Image.Resampling.BILINEAR, expand=False)
    base = ImageOps.colorize(gradient.resize((w, h)), black=rng.choice(PALETTE), white=rng.choice(PALETTE))
    draw = ImageDraw.Draw(base)
    for _ in range(rng.randint(6, 14)):
        x, y, r = rng.randint(0, w), rng.randint(0, h), rng.randint(15, w // 4)
        draw.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r],
                     fill=(rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)))
    img = base.filter(ImageFilter.GaussianBlur(rng.uniform(1, 4)))
    return Image.blend(img, noise.crop((0, 0, w, h)), 0.12)


def texture(rng: random.Random, kind: str) -> Image.Image:
    """A picture that is texture everywhere, in the fixed colours of its kind, so that two of a kind
    differ only in where their detail is (two photos of a lawn): "blotches" (smooth noise), "grain"
    (coarse pixel noise) or "strokes" (many short lines, like grass)."""
    w, h = 320, 240
    dark, light = {"blotches": ((60, 90, 40), (150, 170, 90)), "grain": ((90, 80, 70), (200, 190, 170)),
                   "strokes": ((30, 110, 40), (140, 200, 90))}[kind]
    if kind == "strokes":
        img = Image.new("RGB", (w, h), dark)
        draw = ImageDraw.Draw(img)
        for _ in range(400):
            x, y = rng.randint(0, w), rng.randint(0, h)
            draw.line([x, y, x + rng.randint(-6, 6), y - rng.randint(8, 24)], fill=light, width=2)
        return img
    side = 24 if kind == "blotches" else 80
    noise = Image.frombytes("L", (side, side * h // w), rng.randbytes(side * (side * h // w)))
    resample = Image.Resampling.BICUBIC if kind == "blotches" else Image.Resampling.NEAREST
    return ImageOps.colorize(noise.resize((w, h), resample), black=dark, white=light)


def transformed(img: Image.Image, name: str, fmt: str) -> bytes:
    """`img` after transform `name`, saved in `fmt` (the base's own format) unless the transform is one."""
    w, h = img.size
    if name.startswith("jpeg-q"):
        return encode(img, "JPEG", quality=int(name.removeprefix("jpeg-q")))
    if name == "png":
        return encode(img, "PNG")
    if name.startswith("resize-"):
        scale = int(name.removeprefix("resize-")) / 100
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    elif name == "crop-3-all-sides":
        dx, dy = round(w * 0.03), round(h * 0.03)
        img = img.crop((dx, dy, w - dx, h - dy))
    elif name == "crop-5-one-side":
        img = img.crop((0, 0, w - round(w * 0.05), h))
    elif name == "crop-5-corner":
        img = img.crop((round(w * 0.05), round(h * 0.05), w, h))
    elif name.startswith("brightness-"):
        img = ImageEnhance.Brightness(img).enhance(int(name.removeprefix("brightness-")) / 100)
    else:
        raise ValueError(f"unknown transform {name}")
    return encode(img, fmt)


def _group(name: str, kind: str, img: Image.Image, fmt: str, mirror: bool) -> list[Sample]:
    samples = [Sample(f"{name}/original", name, kind, "original", encode(img, fmt))]
    samples += [Sample(f"{name}/{t}", name, kind, t, transformed(img, t, fmt)) for t in TRANSFORMS]
    if mirror:
        samples.append(Sample(f"{name}-mirrored/original", f"{name}-mirrored", kind, "mirrored",
                              encode(ImageOps.mirror(img), fmt)))
    return samples


def labelled_set(drawn: int = 24, photos: int = 24, textures: int = 12, seed: int = 13) -> list[Sample]:
    """Every sample, deterministic for a given Pillow version: demo shapes, single shapes, drawn
    scenes and photo-like pictures, each with its copies; photos and lopsided drawn scenes also
    mirrored (their random blobs make every photo lopsided)."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for index, (shape, colour, background) in enumerate(SHAPES):
        with Image.open(io.BytesIO(draw_shape(shape, colour, background))) as img:
            samples += _group(f"demo-{index:02d}", "demo", img.convert("RGB"), "PNG", mirror=False)
    for name, img in single_shapes():
        samples += _group(name, "drawn", img, "PNG", mirror=False)
    for index in range(drawn):
        img, lopsided = drawn_scene(rng)
        samples += _group(f"drawn-{index:02d}", "drawn", img, "PNG", mirror=lopsided)
    # From `rng`, not Image.effect_noise, which draws from the C library's generator (a new set each run).
    noise = Image.frombytes("L", (400, 400), rng.randbytes(400 * 400)).convert("RGB")
    for index in range(photos):
        samples += _group(f"photo-{index:02d}", "photo", photo_like(rng, noise), "JPEG", mirror=True)
    for index in range(textures):
        kind = ("blotches", "grain", "strokes")[index % 3]
        samples += _group(f"texture-{index:02d}", "texture", texture(rng, kind), "JPEG", mirror=False)
    return samples


def score(samples: list[Sample], rule: Rule, limits: Limits | None = None) -> dict:
    """Precision and recall of `rule` on the labelled pairs, with signatures made by the upload path
    itself (`inspect_image`)."""
    limits = limits or Limits()
    signatures = [parse(inspect_image(sample.data, limits).phash) for sample in samples]
    return score_with(samples, signatures, lambda a, b: is_near_duplicate(a, b, rule))


def score_with(samples: list[Sample], signatures: list, matches: Callable[[object, object], bool]) -> dict:
    """Score any signature and rule: each original with each of its copies must match; any two
    samples of different groups must not."""
    matched, positives = Counter(), Counter()
    false_positives, confused = Counter(), Counter()
    demo_false_positives = negatives = 0
    for i, a in enumerate(samples):
        for j in range(i + 1, len(samples)):
            b = samples[j]
            if a.group == b.group:
                if a.transform == "original":
                    positives[b.transform] += 1
                    matched[b.transform] += matches(signatures[i], signatures[j])
                continue
            negatives += 1
            if matches(signatures[i], signatures[j]):
                mirrored = a.group.removesuffix("-mirrored") == b.group.removesuffix("-mirrored")
                false_positives["mirrored" if mirrored else "different"] += 1
                confused[f"{a.group} ~ {b.group}"] += 1
                demo_false_positives += a.kind == b.kind == "demo"
    true_positives, fp = sum(matched.values()), sum(false_positives.values())
    in_target = [t for t, category in TRANSFORMS.items() if category in TARGET_CATEGORIES]
    return {
        "precision": round(true_positives / max(1, true_positives + fp), 4),
        "recall": round(true_positives / sum(positives.values()), 4),
        "recall_reencode_resize": round(sum(matched[t] for t in in_target) / sum(positives[t] for t in in_target), 4),
        "false_positives_demo": demo_false_positives,
        "false_positives": fp,
        "pairs": sum(positives.values()) + negatives,
        "images": len(samples),
        "per_transform": {t: {"category": TRANSFORMS[t], "matched": matched[t], "pairs": positives[t]}
                          for t in TRANSFORMS},
        "false_positive_kinds": dict(false_positives),
        "confused_groups": dict(confused.most_common(10)),
    }
