"""POST /api/datasets/{id}/images: files and zips in, an added / duplicates / rejected summary out."""

from __future__ import annotations

from datasets_app.models import Caption, CaptionSource, DatasetImage, StoredBlob
from tests.datasets.conftest import distinct_images, image_bytes, zip_bytes


def test_upload_adds_images_and_reads_captions_beside_them(dataset, member, upload):
    a, b = distinct_images(2)
    status, report = upload(member, dataset, {"a.png": a, "a.txt": b"ohwx, a red square\n", "b.png": b})
    assert status == 200
    assert [x["name"] for x in report["added"]] == ["a.png", "b.png"]
    image = DatasetImage.objects.get(original_name="a.png")
    assert image.caption == "ohwx, a red square"
    caption = Caption.objects.get(image=image)
    assert caption.is_current and caption.source == CaptionSource.IMPORT and caption.created_by == member
    assert DatasetImage.objects.get(original_name="b.png").caption == ""


def test_zip_upload_pairs_captions_and_reads_kohya_repeats(dataset, member, upload):
    a, _b, c = distinct_images(3)
    archive = zip_bytes({"10_ohwx person/one.png": a, "10_ohwx person/one.txt": b"ohwx, smiling",
                         "plain/two.jpg": image_bytes("JPEG", seed=77), "three.png": c,
                         "__MACOSX/._three.png": b"junk", "stray.txt": b"nobody's caption"})
    _, report = upload(member, dataset, {"set.zip": archive})
    added = {x["name"]: x for x in report["added"]}
    assert set(added) == {"set.zip/10_ohwx person/one.png", "set.zip/plain/two.jpg", "set.zip/three.png"}
    one = DatasetImage.objects.get(original_name="one.png")
    assert (one.repeats, one.caption) == (10, "ohwx, smiling")
    assert DatasetImage.objects.get(original_name="three.png").repeats == 1
    assert report["rejected"] == [{"name": "set.zip/stray.txt", "reason": "caption file with no image of the same name"}]


def test_same_bytes_twice_are_reported_as_duplicates_and_stored_once(dataset, member, upload):
    data = image_bytes(seed=5)
    _, first = upload(member, dataset, {"one.png": data, "again.png": data})
    assert len(first["added"]) == 1
    assert first["duplicates"] == [{"name": "again.png", "sha256": first["added"][0]["sha256"],
                                    "existing_id": first["added"][0]["id"]}]
    _, second = upload(member, dataset, {"later.png": data})
    assert second["added"] == [] and second["duplicates"][0]["existing_id"] == first["added"][0]["id"]
    assert DatasetImage.objects.count() == 1 and StoredBlob.objects.count() == 1


def test_bytes_shared_by_two_datasets_are_stored_once(dataset, member, upload, team_a):
    from datasets_app.models import Dataset

    other = Dataset.objects.create(team=team_a, name="second")
    data = image_bytes(seed=8)
    upload(member, dataset, {"x.png": data})
    upload(member, other, {"y.png": data})
    assert DatasetImage.objects.count() == 2 and StoredBlob.objects.count() == 1


def test_near_duplicates_are_flagged_not_refused(dataset, member, upload):
    original = image_bytes("PNG", size=(256, 192), seed=3)
    recompressed = image_bytes("JPEG", size=(250, 188), seed=3, quality=70)
    _, report = upload(member, dataset, {"orig.png": original, "copy.jpg": recompressed})
    assert len(report["added"]) == 2
    assert report["added"][1]["near_duplicate_of"] == report["added"][0]["id"]


def test_viewer_cannot_upload(dataset, viewer, upload):
    status, _body = upload(viewer, dataset, {"a.png": image_bytes()})
    assert status == 403
    assert DatasetImage.objects.count() == 0


def test_outsider_gets_404_for_upload(dataset, outsider, upload):
    status, body = upload(outsider, dataset, {"a.png": image_bytes()})
    assert status == 404 and body == {"detail": "Not found."}
    assert DatasetImage.objects.count() == 0
