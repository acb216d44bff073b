"""Manifest, kohya and lorasite exports, and the round trips back into a dataset."""

from __future__ import annotations

import io
import json
import zipfile

from django.core.management import call_command
from django.test.client import MULTIPART_CONTENT

from datasets_app.models import Dataset, DatasetImage, ReviewState
from tests.datasets.conftest import distinct_images, image_bytes, named


def seeded(dataset, member, upload):
    a, _b, c = distinct_images(3)
    upload(member, dataset, {"a.png": a, "a.txt": b"ohwx, one", "b.jpg": image_bytes("JPEG", seed=90),
                             "b.txt": b"ohwx, two", "c.png": c})
    DatasetImage.objects.filter(original_name__in=["a.png", "b.jpg"]).update(review_state=ReviewState.APPROVED)
    DatasetImage.objects.filter(original_name="b.jpg").update(repeats=4)
    DatasetImage.objects.filter(original_name="c.png").update(review_state=ReviewState.REJECTED)


def streamed(response) -> zipfile.ZipFile:
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def image_set(dataset) -> set[tuple[str, str]]:
    return set(DatasetImage.objects.filter(dataset=dataset).values_list("sha256", "caption"))


def test_manifest_describes_the_dataset_and_every_image(dataset, member, viewer, upload, api_for):
    seeded(dataset, member, upload)
    body = api_for(viewer).get(f"/api/datasets/{dataset.uuid}/manifest").json()
    assert body["format"] == "lorasite-dataset" and body["dataset"]["trigger_word"] == "ohwx"
    images = {i["original_name"]: i for i in body["images"]}
    assert set(images) == {"a.png", "b.jpg", "c.png"}
    assert images["b.jpg"]["caption"] == "ohwx, two" and images["b.jpg"]["repeats"] == 4
    assert images["c.png"]["review_state"] == "rejected" and images["a.png"]["size_bytes"] > 0
    assert len(images["a.png"]["sha256"]) == 64


def test_kohya_export_has_approved_images_with_captions_in_repeats_folders(dataset, member, upload, api_for):
    seeded(dataset, member, upload)
    archive = streamed(api_for(member).get(f"/api/datasets/{dataset.uuid}/export?format=kohya"))
    assert sorted(archive.namelist()) == ["1_ohwx/a.png", "1_ohwx/a.txt", "4_ohwx/b.jpg", "4_ohwx/b.txt"]
    assert archive.read("4_ohwx/b.txt") == b"ohwx, two"
    assert archive.testzip() is None


def test_kohya_export_then_import_gives_the_same_images_and_captions(dataset, member, upload, api_for, team_a,
                                                                      tmp_path):
    seeded(dataset, member, upload)
    data = b"".join(api_for(member).get(f"/api/datasets/{dataset.uuid}/export?format=kohya").streaming_content)
    approved = set(DatasetImage.objects.filter(dataset=dataset, review_state=ReviewState.APPROVED)
                   .values_list("sha256", "caption", "repeats"))
    # Back in through the upload API ...
    copy = Dataset.objects.create(team=team_a, name="copy")
    upload(member, copy, {"export.zip": data})
    assert set(DatasetImage.objects.filter(dataset=copy).values_list("sha256", "caption", "repeats")) == approved
    # ... and through the folder importer, from the unpacked folder.
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path / "unpacked")
    call_command("import_dataset", str(tmp_path / "unpacked"), team="alpha", name="from-folder", stdout=io.StringIO(),
                 stderr=io.StringIO())
    folder = Dataset.objects.get(name="from-folder")
    assert folder.trigger_word == "ohwx"
    assert set(DatasetImage.objects.filter(dataset=folder).values_list("sha256", "caption", "repeats")) == approved


def test_kohya_export_of_an_uncaptioned_image_imports_back_with_an_empty_caption(dataset, member, upload, api_for,
                                                                                  tmp_path):
    upload(member, dataset, {"plain.png": distinct_images(1)[0]})
    DatasetImage.objects.filter(dataset=dataset).update(review_state=ReviewState.APPROVED)
    data = b"".join(api_for(member).get(f"/api/datasets/{dataset.uuid}/export?format=kohya").streaming_content)
    assert zipfile.ZipFile(io.BytesIO(data)).read("1_ohwx/plain.txt") == b""
    for source in ("zip", "folder"):
        path = tmp_path / "export.zip"
        path.write_bytes(data)
        if source == "folder":
            zipfile.ZipFile(path).extractall(tmp_path / "unpacked")
            path = tmp_path / "unpacked"
        out, err = io.StringIO(), io.StringIO()
        call_command("import_dataset", str(path), team="alpha", name=f"from-{source}", stdout=out, stderr=err)
        assert json.loads(out.getvalue())["rejected"] == 0, err.getvalue()
        image = DatasetImage.objects.get(dataset__name=f"from-{source}")
        assert image.caption == ""


def test_lorasite_export_imports_as_an_identical_dataset(dataset, member, upload, api_for):
    seeded(dataset, member, upload)
    data = b"".join(api_for(member).get(f"/api/datasets/{dataset.uuid}/export?format=lorasite").streaming_content)
    response = api_for(member).post("/api/datasets/import", {"files": [named(data, "faces.zip")], "name": "faces-2"},
                                    content_type=MULTIPART_CONTENT)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["report"]["rejected"] == [] and len(body["report"]["added"]) == 3
    copy = Dataset.objects.get(uuid=body["dataset"]["id"])
    fields = ("sha256", "caption", "review_state", "repeats", "original_name", "width", "height")
    assert set(DatasetImage.objects.filter(dataset=copy).values_list(*fields)) == set(
        DatasetImage.objects.filter(dataset=dataset).values_list(*fields))
    assert copy.trigger_word == "ohwx"


def test_manifest_plus_loose_files_recreates_the_dataset_and_reports_missing_files(dataset, member, upload,
                                                                                    api_for):
    seeded(dataset, member, upload)
    manifest = api_for(member).get(f"/api/datasets/{dataset.uuid}/manifest").content
    archive = zipfile.ZipFile(io.BytesIO(b"".join(
        api_for(member).get(f"/api/datasets/{dataset.uuid}/export?format=lorasite").streaming_content)))
    files = [n for n in archive.namelist() if n.startswith("images/")]
    uploads = [named(manifest, "manifest.json")] + [named(archive.read(n), f"renamed-{i}.bin")
                                                   for i, n in enumerate(files[:2])]
    uploads.append(named(image_bytes(seed=123), "stranger.png"))
    body = api_for(member).post("/api/datasets/import", {"files": uploads, "name": "partial"},
                                content_type=MULTIPART_CONTENT).json()
    assert len(body["report"]["added"]) == 2
    reasons = sorted(r["reason"] for r in body["report"]["rejected"])
    assert reasons == ["listed in the manifest but its file was not provided", "not listed in the manifest"]


def test_import_without_a_manifest_is_refused(member, api_for):
    response = api_for(member).post("/api/datasets/import", {"files": [named(image_bytes(), "a.png")]},
                                    content_type=MULTIPART_CONTENT)
    assert response.status_code == 422 and "manifest.json" in response.json()["detail"]
    assert not Dataset.objects.exists()


def test_viewer_cannot_import(viewer, api_for):
    response = api_for(viewer).post("/api/datasets/import",
                                    {"files": [named(b"{}", "manifest.json")], "team": "alpha"},
                                    content_type=MULTIPART_CONTENT)
    assert response.status_code == 403


def test_outsider_gets_404_for_manifest_and_export(dataset, outsider, api_for):
    client = api_for(outsider)
    assert client.get(f"/api/datasets/{dataset.uuid}/manifest").status_code == 404
    assert client.get(f"/api/datasets/{dataset.uuid}/export?format=kohya").status_code == 404
    response = client.post("/api/datasets/import", {"files": [named(b"{}", "manifest.json")], "team": "alpha"},
                           content_type=MULTIPART_CONTENT)
    assert response.status_code == 404


def test_export_refuses_an_unknown_format(dataset, member, api_for):
    assert api_for(member).get(f"/api/datasets/{dataset.uuid}/export?format=rar").status_code == 422


def test_import_command_reads_captions_and_kohya_repeats_recursively(member, team_a, tmp_path):
    a, b, c = distinct_images(3)
    (tmp_path / "set" / "20_zkw dog" / "deep").mkdir(parents=True)
    (tmp_path / "set" / "20_zkw dog" / "one.png").write_bytes(a)
    (tmp_path / "set" / "20_zkw dog" / "one.txt").write_text("zkw dog, sitting")
    (tmp_path / "set" / "20_zkw dog" / "deep" / "two.png").write_bytes(b)
    (tmp_path / "set" / "three.png").write_bytes(c)
    (tmp_path / "set" / "three.txt").write_text("a plain pair")
    (tmp_path / "set" / "notes.md").write_text("# not an image")
    (tmp_path / "set" / "link.png").symlink_to(tmp_path / "set" / "three.png")
    out, err = io.StringIO(), io.StringIO()
    call_command("import_dataset", str(tmp_path / "set"), team="alpha", name="dogs", user="mia",
                 stdout=out, stderr=err)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    assert (summary["added"], summary["rejected"]) == (3, 2)
    assert "rejected link.png: symbolic link; not followed" in err.getvalue()
    assert "rejected notes.md: not a PNG" in err.getvalue()
    dogs = Dataset.objects.get(name="dogs")
    assert dogs.trigger_word == "zkw" and dogs.created_by == member
    rows = dict(DatasetImage.objects.filter(dataset=dogs).values_list("original_name", "repeats"))
    assert rows == {"one.png": 20, "two.png": 20, "three.png": 1}
    assert DatasetImage.objects.get(original_name="three.png").caption == "a plain pair"
