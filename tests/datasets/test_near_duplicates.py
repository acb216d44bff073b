"""Near-duplicate detection: the rule's precision and recall on the generated labelled set, the demo
shapes through the real ingest path, and the migration that recomputes old hashes from stored files."""

from __future__ import annotations

import base64
import importlib
import io
import os
import subprocess
import sys

import pytest
from django.apps import apps
from PIL import Image

from datasets_app.demo import SHAPES, draw_shape, seed_demo
from datasets_app.ingest import Entry, ingest_entries
from datasets_app.models import Caption, DatasetImage
from datasets_app.near_duplicates import Rule, is_near_duplicate, parse, signature
from datasets_app.storage import media_path
from tests.datasets.near_duplicate_set import encode, labelled_set, score
from tests.services import REPO

wider_hash = importlib.import_module("datasets_app.migrations.0003_wider_perceptual_hash")


@pytest.fixture(scope="module")
def labelled() -> dict:
    return score(labelled_set(), Rule())


def entries(files: dict[str, bytes]) -> list[Entry]:
    return [Entry(name=name, path=name, read=lambda data=data: data) for name, data in files.items()]


def plain(colour, size=(96, 64), fmt="PNG") -> bytes:
    return encode(Image.new("RGB", size, colour), fmt)


def signature_of(data: bytes):
    with Image.open(io.BytesIO(data)) as img:
        return parse(signature(img.convert("RGB")))


def test_no_two_demo_shapes_or_copies_of_different_ones_are_near_duplicates(labelled):
    assert labelled["false_positives_demo"] == 0, labelled["confused_groups"]


def test_at_least_95_percent_of_reencodes_and_resizes_are_found(labelled):
    assert labelled["recall_reencode_resize"] >= 0.95, labelled["per_transform"]


def test_whole_labelled_set_has_at_least_98_percent_precision_and_95_percent_recall(labelled):
    assert labelled["pairs"] > 400_000  # every cross-group pair of ~1000 images is scored
    assert labelled["precision"] >= 0.98, labelled["confused_groups"]
    assert labelled["recall"] >= 0.95


def test_each_copy_but_crops_is_found_95_percent_of_the_time_and_crops_85(labelled):
    floors = {"crop": 0.85}
    weak = {name: row for name, row in labelled["per_transform"].items()
            if row["matched"] < floors.get(row["category"], 0.95) * row["pairs"]}
    assert weak == {}


def test_demo_seeding_flags_no_image_as_a_near_duplicate(db, team_a, member):
    seed_demo(team_a, member, io.StringIO())
    images = DatasetImage.objects.filter(dataset__team=team_a)
    assert images.count() == 12
    assert list(images.filter(near_duplicate_of__isnull=False)) == []


def test_flat_pictures_match_in_the_same_colour_and_not_in_another():
    blue, blue_copy, red = plain((40, 80, 220)), plain((40, 80, 220), (48, 32), "JPEG"), plain((220, 40, 40))
    assert is_near_duplicate(signature_of(blue), signature_of(blue_copy), Rule())
    assert not is_near_duplicate(signature_of(blue), signature_of(red), Rule())


def test_blank_older_and_damaged_signatures_parse_as_none():
    good = signature(Image.new("RGB", (32, 32), (1, 2, 3)))
    assert parse(good) is not None
    assert parse("") is None
    assert parse("00e0e0e0e0e0e000") is None  # a 64-bit dHash from before migration 0003
    assert parse("v2:not base64!") is None
    assert parse("v2:" + base64.b64encode(b"short").decode()) is None


def test_an_image_with_an_older_hash_takes_no_part_and_breaks_no_upload(dataset, member):
    report = ingest_entries(dataset, entries({"blue.png": plain((40, 80, 220))}), user=member)
    DatasetImage.objects.filter(uuid=report.added[0]["id"]).update(phash="00e0e0e0e0e0e000")
    second = ingest_entries(dataset, entries({"blue.jpg": plain((40, 80, 220), fmt="JPEG")}), user=member)
    assert second.rejected == [] and second.added[0]["near_duplicate_of"] is None


def test_a_copy_of_a_file_that_failed_to_store_is_added_unflagged(dataset, member, monkeypatch):
    real = Caption.objects.bulk_create

    def picky(objs, *args, **kwargs):
        if any(c.text == "boom" for c in objs):
            raise RuntimeError("this caption breaks the database")
        return real(objs, *args, **kwargs)

    monkeypatch.setattr(Caption.objects, "bulk_create", picky)
    with Image.open(io.BytesIO(draw_shape("circle", "red", "blue"))) as img:
        original, copy = encode(img.convert("RGB"), "PNG"), encode(img.convert("RGB"), "JPEG", quality=80)
    report = ingest_entries(dataset, entries({"a.png": original, "a.txt": b"boom", "copy.jpg": copy}), user=member)
    assert [r["name"] for r in report.rejected] == ["a.png"]
    assert [(a["name"], a["near_duplicate_of"]) for a in report.added] == [("copy.jpg", None)]
    assert DatasetImage.objects.get(original_name="copy.jpg").near_duplicate_of is None


def test_migration_recomputes_old_hashes_and_flags_from_the_stored_files(dataset, member):
    files = {f"shape-{i:02d}.png": draw_shape(*spec) for i, spec in enumerate(SHAPES)}
    with Image.open(io.BytesIO(files["shape-00.png"])) as img:
        files["copy-of-00.jpg"] = encode(img.convert("RGB"), "JPEG", quality=75)
    ingest_entries(dataset, entries(files), user=member)
    images = list(DatasetImage.objects.filter(dataset=dataset).select_related("blob").order_by("id"))
    first, *rest = images
    # What the old rule left behind: 16 hex digits and most shapes flagged against the first.
    DatasetImage.objects.filter(dataset=dataset).update(phash="0007070707070700", near_duplicate_of=None)
    DatasetImage.objects.filter(pk__in=[i.pk for i in rest]).update(near_duplicate_of=first)
    media_path(images[1].blob.thumbnail.name).unlink()  # made again from the original
    lost = images[2].blob
    media_path(lost.thumbnail.name).unlink()
    media_path(lost.file.name).unlink()

    wider_hash.recompute(apps, None)

    after = {i.original_name: i for i in DatasetImage.objects.filter(dataset=dataset).select_related(
        "near_duplicate_of")}
    flagged = {name: i.near_duplicate_of.original_name for name, i in after.items() if i.near_duplicate_of}
    assert flagged == {"copy-of-00.jpg": "shape-00.png"}
    assert after["shape-02.png"].phash == ""
    assert all(parse(i.phash) for name, i in after.items() if name != "shape-02.png")


def test_the_replaced_distance_setting_is_refused_naming_its_replacements():
    probe = "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.settings'; django.setup()"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DATASET_NEAR_DUPLICATE_DISTANCE": "6"})
    assert result.returncode != 0
    assert "DATASET_NEAR_DUPLICATE_EDGE_PERCENT" in result.stderr
