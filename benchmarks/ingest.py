"""Ingest throughput: a zip of 200 JPEGs at about 1024×1024 through the real ingest path, against a
bare Pillow loop that only decodes each JPEG and makes the same thumbnail, in the same run.

    .venv/bin/python benchmarks/ingest.py [--images 200 --size 1024]
    DATABASE_URL=postgres://user@127.0.0.1:5432/db SECRET_KEY=x .venv/bin/python benchmarks/ingest.py

Without DATABASE_URL it runs embedded (SQLite in a temporary folder). Prints ONE JSON object on
its last line: {"images_per_s", "bare_pillow_images_per_s", "overhead_ratio", ...}.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _inprocess import setup_django


def make_jpegs(count: int, size: int) -> list[bytes]:
    """Photo-like JPEGs (smooth gradients, shapes and sensor-like noise) of about size×size."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(1234)
    out = []
    noise = Image.effect_noise((size, size), 24).convert("RGB")
    for i in range(count):
        w = size + rng.randint(-64, 64)
        h = size + rng.randint(-64, 64)
        base = Image.linear_gradient("L").resize((w, h)).convert("RGB")
        tint = Image.new("RGB", (w, h), (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)))
        img = Image.blend(base, tint, 0.5)
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.randint(0, w), rng.randint(0, h)
            r = rng.randint(20, 200)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(rng.randint(0, 255), rng.randint(0, 255), i % 255))
        img = img.filter(ImageFilter.GaussianBlur(2))
        img = Image.blend(img, noise.crop((0, 0, w, h)) if w <= size and h <= size else noise.resize((w, h)), 0.15)
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def bare_pillow(jpegs: list[bytes]) -> float:
    """Seconds for the floor: decode every JPEG fully and make the same 256 px thumbnail."""
    from PIL import Image

    from datasets_app.imaging import make_thumbnail
    from datasets_app.validation import THUMBNAIL_SIZE

    start = time.perf_counter()
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            make_thumbnail(img, THUMBNAIL_SIZE)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()

    work = setup_django("ingest")
    from django.db import connection

    from datasets_app.ingest import ingest_entries, limits_from_settings, upload_entries
    from datasets_app.models import Dataset
    from lorasite.accounts.models import Team

    jpegs = make_jpegs(args.images, args.size)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        for i, data in enumerate(jpegs):
            z.writestr(f"photos/img_{i:04d}.jpg", data)
            z.writestr(f"photos/img_{i:04d}.txt", f"ohwx, photo number {i}")
    zip_bytes = archive.getvalue()

    bare_s = min(bare_pillow(jpegs) for _ in range(2))  # best of two: the floor, warm caches

    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    Dataset.objects.filter(team=team).delete()
    timings = []
    for attempt in range(2):
        dataset = Dataset.objects.create(team=team, name=f"ingest-{attempt}-{time.time_ns()}")
        # A fresh MEDIA_ROOT per attempt, so the second run writes its files too instead of reusing blobs.
        from django.conf import settings

        settings.MEDIA_ROOT = str(work / f"media-{attempt}")
        from datasets_app.models import StoredBlob

        StoredBlob.objects.filter(images__isnull=True).delete()
        start = time.perf_counter()
        with ExitStack() as stack:
            upload = io.BytesIO(zip_bytes)
            entries = upload_entries("photos.zip", upload, len(zip_bytes), limits_from_settings(), stack)
            report = ingest_entries(dataset, entries)
        timings.append(time.perf_counter() - start)
        assert len(report.added) == args.images, report.rejected[:3]
        dataset.delete()
        StoredBlob.objects.filter(images__isnull=True).delete()
    ingest_s = min(timings)
    result = {
        "images_per_s": round(args.images / ingest_s, 1),
        "bare_pillow_images_per_s": round(args.images / bare_s, 1),
        "overhead_ratio": round(ingest_s / bare_s, 3),
        "images": args.images,
        "avg_jpeg_kib": round(sum(map(len, jpegs)) / len(jpegs) / 1024, 1),
        "database": connection.vendor,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
