"""Dataset housekeeping from a script: import a zip, read its stats and duplicates, clean the
captions, review, and download the kohya export.

    LORASITE_URL=... LORASITE_TOKEN=... python examples/dataset_management.py shots.zip --out shots-kohya.zip
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lorasite_client import Client, LorasiteError, ProgressBar


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zip", type=Path, help="a zip of images with name.txt captions (kohya folders welcome)")
    parser.add_argument("--name", help="dataset name (default: the zip's name)")
    parser.add_argument("--team", help="team slug (needed only when you belong to several)")
    parser.add_argument("--trigger", default="", help="trigger word to put at the front of every caption")
    parser.add_argument("--out", default="./", help="file, or folder (ending in /), for the kohya export zip")
    args = parser.parse_args()

    with Client.from_env() as portal:
        try:
            dataset = portal.create_dataset(args.name or args.zip.stem, team=args.team, trigger_word=args.trigger)
            report = portal.upload_zip(dataset.id, args.zip, progress=ProgressBar("uploading"))
            print(f"dataset {dataset.id}: {len(report.added)} added, {len(report.duplicates)} exact duplicates, "
                  f"{len(report.rejected)} rejected")
            for item in report.duplicates:
                print(f"  exact duplicate skipped: {item['name']}")
            for item in report.rejected:
                print(f"  rejected {item['name']}: {item['reason']}")

            stats = portal.stats(dataset.id)
            print(f"stats: {stats.total_images} images, {stats.images_with_captions} captioned, "
                  f"average caption {stats.avg_caption_length} characters, review {stats.review_states}")
            print("top tags: " + ", ".join(f"{t['tag']} ({t['count']})" for t in stats.top_tags[:5]))

            # Near-duplicates: keep the first image of each group, reject the others.
            names = {image.id: image.name for image in portal.iter_images(dataset.id)}
            rejected = [image_id for group in stats.duplicate_groups for image_id in group[1:]]
            for group in stats.duplicate_groups:
                print("near-duplicates: " + " ~ ".join(names.get(i, i) for i in group))
            if rejected:
                print(f"review: rejected {portal.review(dataset.id, rejected, 'rejected')} near-duplicates")

            cleaned = portal.caption_tool(dataset.id, "clean_whitespace")
            print(f"caption tool clean_whitespace: {cleaned.changed} captions changed")
            if args.trigger:
                triggered = portal.caption_tool(dataset.id, "add_trigger")
                print(f"caption tool add_trigger: {triggered.changed} captions changed")

            pending = [image.id for image in portal.iter_images(dataset.id, review_state="pending")]
            print(f"review: approved {portal.review(dataset.id, pending, 'approved')} images")

            stats = portal.stats(dataset.id)
            print(f"review states now {stats.review_states}")
            path = portal.export_dataset(dataset.id, args.out, format="kohya")
            print(f"kohya export saved to {path}")
        except LorasiteError as exc:
            where = f" [{exc.field}]" if exc.field else ""
            print(f"error{where}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
