"""build_snapshot: what a training job freezes; rejected images never train."""

from __future__ import annotations

import os

from datasets_app.captions import set_caption
from datasets_app.models import DatasetImage, ReviewState
from datasets_app.snapshot import build_snapshot
from tests.datasets.conftest import distinct_images


def test_snapshot_lists_pending_and_approved_images_with_their_files(dataset, member, upload):
    a, b, c = distinct_images(3)
    upload(member, dataset, {"a.png": a, "a.txt": b"ohwx, one", "b.png": b, "c.png": c})
    DatasetImage.objects.filter(original_name="b.png").update(review_state=ReviewState.APPROVED, repeats=3)
    DatasetImage.objects.filter(original_name="c.png").update(review_state=ReviewState.REJECTED)
    snap = build_snapshot(dataset)
    assert snap["image_count"] == 2 and snap["dataset"]["trigger_word"] == "ohwx"
    by_caption = {i["caption"]: i for i in snap["images"]}
    assert set(by_caption) == {"ohwx, one", ""}
    first = by_caption["ohwx, one"]
    assert os.path.isfile(first["path"]) and first["path"].endswith(first["storage_name"])
    assert by_caption[""]["repeats"] == 3
    assert set(first) == {"id", "sha256", "path", "storage_name", "caption", "repeats", "width", "height"}


def test_rejected_images_never_train_even_when_asked_for(dataset, member, upload):
    upload(member, dataset, {"a.png": distinct_images(1)[0]})
    DatasetImage.objects.update(review_state=ReviewState.REJECTED)
    assert build_snapshot(dataset, include_states=[ReviewState.REJECTED])["image_count"] == 0


def test_snapshot_digest_follows_the_training_data_only(dataset, member, upload, team_a):
    from datasets_app.models import Dataset

    images = distinct_images(2)
    upload(member, dataset, {"a.png": images[0], "b.png": images[1]})
    twin = Dataset.objects.create(team=team_a, name="twin")
    upload(member, twin, {"b.png": images[1], "a.png": images[0]})
    assert build_snapshot(dataset)["sha256"] == build_snapshot(twin)["sha256"]
    before = build_snapshot(dataset)["sha256"]
    set_caption(DatasetImage.objects.filter(dataset=dataset).first(), "new words", member)
    assert build_snapshot(dataset)["sha256"] != before
    only_approved = build_snapshot(dataset, include_states=[ReviewState.APPROVED])
    assert only_approved["image_count"] == 0
