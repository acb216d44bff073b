"""Near-duplicate detection on the generated labelled set (tests/datasets/near_duplicate_set.py):
precision and recall of the rule ingest uses, per transform, beside the 64-bit dHash it replaced.

    .venv/bin/python benchmarks/near_duplicates.py [--drawn 24 --photos 24 --textures 12 --seed 13]

Signatures are made by the upload path itself (`validation.inspect_image`); the rule's limits come
from the settings (DATASET_NEAR_DUPLICATE_EDGE_PERCENT, DATASET_NEAR_DUPLICATE_COLOUR_PERCENT). Also
times a signature (per 256 px thumbnail) and a comparison, which ingest makes against every image
of the dataset. Prints a per-transform table, then ONE JSON object on its last line:
{"precision", "recall", "recall_reencode_resize", "false_positives_demo", "pairs", ...}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup() -> None:
    """Django's settings and apps (the set draws the demo shapes from datasets_app.demo); no database."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("LORASITE_VAR_DIR", tempfile.mkdtemp(prefix="lorasite-bench-near-duplicates-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lorasite.settings")
    import django

    django.setup()


def legacy_dhash(data: bytes) -> int:
    """The rule before migration 0003: a 64-bit dHash of a 9×8 greyscale copy of the thumbnail."""
    from PIL import Image

    from datasets_app.imaging import make_thumbnail

    with Image.open(io.BytesIO(data)) as img:
        return legacy_dhash_of(make_thumbnail(img, 256))


def legacy_dhash_of(thumb) -> int:
    from PIL import Image

    small = thumb.convert("L").resize((9, 8), Image.Resampling.BILINEAR).tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (small[row * 9 + col] > small[row * 9 + col + 1])
    return bits


def timings(samples) -> dict:
    from PIL import Image

    from datasets_app.imaging import make_thumbnail
    from datasets_app.ingest import near_duplicate_rule
    from datasets_app.near_duplicates import is_near_duplicate, parse, signature

    thumbs = []
    for sample in samples[::max(1, len(samples) // 200)]:  # every kind, mostly pairs that do not match
        with Image.open(io.BytesIO(sample.data)) as img:
            thumbs.append(make_thumbnail(img, 256))
    start = time.perf_counter()
    texts = [signature(thumb) for thumb in thumbs]
    signature_s = (time.perf_counter() - start) / len(thumbs)
    start = time.perf_counter()
    parsed = [parse(text) for text in texts]
    parse_s = (time.perf_counter() - start) / len(texts)
    rule = near_duplicate_rule()
    pairs = [(a, b) for i, a in enumerate(parsed) for b in parsed[i + 1:]]
    start = time.perf_counter()
    for a, b in pairs:
        is_near_duplicate(a, b, rule)
    compare_s = (time.perf_counter() - start) / len(pairs)
    start = time.perf_counter()
    hashes = [legacy_dhash_of(thumb) for thumb in thumbs]
    legacy_s = (time.perf_counter() - start) / len(thumbs)
    start = time.perf_counter()
    for i, a in enumerate(hashes):
        for b in hashes[i + 1:]:
            (a ^ b).bit_count() <= 6  # noqa: B015 - timed, not used
    legacy_compare_s = (time.perf_counter() - start) / len(pairs)
    return {"signature_ms": round(signature_s * 1e3, 3), "parse_us": round(parse_s * 1e6, 1),
            "compare_us": round(compare_s * 1e6, 2), "signature_chars": len(texts[0]),
            "legacy_dhash_ms": round(legacy_s * 1e3, 3), "legacy_compare_us": round(legacy_compare_s * 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawn", type=int, default=24)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--textures", type=int, default=12)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    setup()
    from datasets_app.ingest import near_duplicate_rule
    from tests.datasets.near_duplicate_set import labelled_set, score, score_with

    samples = labelled_set(drawn=args.drawn, photos=args.photos, textures=args.textures, seed=args.seed)
    ours = score(samples, near_duplicate_rule())
    legacy = score_with(samples, [legacy_dhash(s.data) for s in samples], lambda a, b: (a ^ b).bit_count() <= 6)
    print(f"{'transform':18} {'category':11} {'found':>9} {'dHash-6 found':>14}")
    for name, row in ours["per_transform"].items():
        old = legacy["per_transform"][name]
        print(f"{name:18} {row['category']:11} {row['matched']:>4}/{row['pairs']:<4} {old['matched']:>9}/{old['pairs']:<4}")
    print(f"false positives: {ours['false_positives']} ({ours['false_positive_kinds']}); "
          f"dHash-6: {legacy['false_positives']} ({legacy['false_positive_kinds']})")
    if ours["confused_groups"]:
        print("confused groups:", ours["confused_groups"])

    def recall_of(result, category):
        rows = [r for r in result["per_transform"].values() if r["category"] == category]
        return round(sum(r["matched"] for r in rows) / sum(r["pairs"] for r in rows), 4)

    keys = ("precision", "recall", "recall_reencode_resize", "false_positives_demo", "false_positives")
    result = {key: ours[key] for key in keys}
    result.update({"recall_crop": recall_of(ours, "crop"), "recall_brightness": recall_of(ours, "brightness"),
                   "pairs": ours["pairs"], "images": ours["images"], **timings(samples),
                   "legacy_dhash_6": {key: legacy[key] for key in keys}})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
