"""Listing, reviewing and captioning images: GET /api/datasets/{id}/images, PATCH /api/images/{id}."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from datasets_app.models import Caption, Dataset, DatasetImage, ReviewState, StoredBlob


def make_images(dataset: Dataset, n: int, state: str = ReviewState.PENDING) -> list[DatasetImage]:
    """Rows without files: enough for list and review behaviour, fast for hundreds of images."""
    start = DatasetImage.objects.count()
    blobs = StoredBlob.objects.bulk_create([
        StoredBlob(sha256=f"{start + i:064x}", file=f"blobs/x/{start + i}.png", format="PNG", size_bytes=10)
        for i in range(n)])
    return DatasetImage.objects.bulk_create([
        DatasetImage(dataset=dataset, blob=b, sha256=b.sha256, width=64, height=48, format="PNG", size_bytes=10,
                     original_name=f"{start + i}.png", review_state=state) for i, b in enumerate(blobs)])


def test_images_are_listed_in_pages_and_filtered_by_review_state(dataset, viewer, api_for):
    make_images(dataset, 5)
    make_images(dataset, 2, ReviewState.APPROVED)
    client = api_for(viewer)
    page = client.get(f"/api/datasets/{dataset.uuid}/images?page=2&page_size=3").json()
    assert (page["count"], page["pages"], page["page"], len(page["results"])) == (7, 3, 2, 3)
    approved = client.get(f"/api/datasets/{dataset.uuid}/images?review_state=approved").json()
    assert approved["count"] == 2 and {r["review_state"] for r in approved["results"]} == {"approved"}
    first = approved["results"][0]
    assert first["thumbnail_url"] == f"/images/{first['id']}/thumbnail"
    assert client.get(f"/api/datasets/{dataset.uuid}/images?review_state=lost").status_code == 422


def test_listing_images_takes_the_same_number_of_queries_for_any_page_size(dataset, member, api_for):
    images = make_images(dataset, 120)
    # Reviewed and near-duplicate rows exercise the joins a lazy lookup would otherwise add per row.
    DatasetImage.objects.filter(pk__in=[i.pk for i in images[::2]]).update(reviewed_by=member,
                                                                          review_state=ReviewState.APPROVED)
    DatasetImage.objects.filter(pk__in=[i.pk for i in images[1::3]]).update(near_duplicate_of=images[0])
    client = api_for(member)
    counts = []
    for size in (5, 100):
        client.get(f"/api/datasets/{dataset.uuid}/images?page_size={size}")  # warm the token's last_used
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/api/datasets/{dataset.uuid}/images?page_size={size}&crop_resolution=512")
        assert len(response.json()["results"]) == size
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


def test_patch_sets_the_caption_as_a_new_version_and_keeps_history(dataset, member, api_for):
    image = make_images(dataset, 1)[0]
    client = api_for(member)
    client.patch(f"/api/images/{image.uuid}", {"caption": "a cat"})
    response = client.patch(f"/api/images/{image.uuid}", {"caption": "ohwx, a cat on a sofa"})
    assert response.status_code == 200 and response.json()["caption"] == "ohwx, a cat on a sofa"
    assert list(Caption.objects.filter(image=image).values_list("text", "is_current").order_by("id")) == [
        ("a cat", False), ("ohwx, a cat on a sofa", True)]
    history = client.get(f"/api/images/{image.uuid}/captions").json()
    assert [(h["version"], h["text"], h["is_current"]) for h in history] == [
        (2, "ohwx, a cat on a sofa", True), (1, "a cat", False)]
    restored = client.post(f"/api/images/{image.uuid}/captions/restore", {"version": 1}).json()
    assert restored["caption"] == "a cat"
    assert Caption.objects.filter(image=image).count() == 3


def test_unchanged_caption_adds_no_version(dataset, member, api_for):
    image = make_images(dataset, 1)[0]
    client = api_for(member)
    client.patch(f"/api/images/{image.uuid}", {"caption": "same"})
    client.patch(f"/api/images/{image.uuid}", {"caption": "same"})
    assert Caption.objects.filter(image=image).count() == 1


def test_patch_review_state_records_the_reviewer(dataset, member, api_for):
    image = make_images(dataset, 1)[0]
    body = api_for(member).patch(f"/api/images/{image.uuid}", {"review_state": "approved"}).json()
    assert body["review_state"] == "approved" and body["reviewed_by"] == "mia" and body["reviewed_at"]
    body = api_for(member).patch(f"/api/images/{image.uuid}", {"review_state": "pending"}).json()
    assert body["reviewed_by"] is None and body["reviewed_at"] is None


def test_bulk_review_changes_only_this_datasets_images(dataset, other_dataset, member, api_for):
    mine = make_images(dataset, 3)
    theirs = make_images(other_dataset, 1)
    response = api_for(member).post(f"/api/datasets/{dataset.uuid}/review", {
        "review_state": "rejected", "images": [str(i.uuid) for i in mine[:2]] + [str(theirs[0].uuid)]})
    assert response.json() == {"changed": 2}
    assert DatasetImage.objects.get(pk=theirs[0].pk).review_state == ReviewState.PENDING


def test_viewer_cannot_write_images(dataset, viewer, api_for):
    image = make_images(dataset, 1)[0]
    client = api_for(viewer)
    assert client.patch(f"/api/images/{image.uuid}", {"caption": "x"}).status_code == 403
    assert client.post(f"/api/images/{image.uuid}/captions/restore", {"version": 1}).status_code == 403
    assert client.delete(f"/api/images/{image.uuid}").status_code == 403
    assert client.post(f"/api/datasets/{dataset.uuid}/review",
                       {"review_state": "approved", "images": [str(image.uuid)]}).status_code == 403
    assert client.get(f"/api/images/{image.uuid}").status_code == 200
    assert DatasetImage.objects.get(pk=image.pk).caption == ""


@pytest.mark.parametrize("method,path,body", [
    ("get", "/api/images/{image}", None),
    ("patch", "/api/images/{image}", {"caption": "mine now"}),
    ("delete", "/api/images/{image}", None),
    ("get", "/api/images/{image}/captions", None),
    ("post", "/api/images/{image}/captions/restore", {"version": 1}),
    ("get", "/api/datasets/{dataset}/images", None),
    ("post", "/api/datasets/{dataset}/review", {"review_state": "approved", "images": []}),
])
def test_outsider_gets_404_for_images(dataset, outsider, api_for, method, path, body):
    image = make_images(dataset, 1)[0]
    client = api_for(outsider)
    url = path.format(image=image.uuid, dataset=dataset.uuid)
    response = getattr(client, method)(url, body) if body is not None else getattr(client, method)(url)
    assert response.status_code == 404
    assert DatasetImage.objects.get(pk=image.pk).caption == ""


def test_member_deletes_an_image(dataset, member, api_for):
    image = make_images(dataset, 1)[0]
    assert api_for(member).delete(f"/api/images/{image.uuid}").status_code == 204
    assert not DatasetImage.objects.filter(pk=image.pk).exists()


def test_crop_preview_describes_the_training_crop(dataset, viewer, api_for):
    image = make_images(dataset, 1)[0]
    DatasetImage.objects.filter(pk=image.pk).update(width=2000, height=1000)
    body = api_for(viewer).get(f"/api/datasets/{dataset.uuid}/images?crop_resolution=512&bucketing=false").json()
    crop = body["results"][0]["crop"]
    assert (crop["target_width"], crop["target_height"]) == (512, 512)
    assert crop["left"] == pytest.approx(0.25) and crop["right"] == pytest.approx(0.75)
    assert crop["top"] == 0 and crop["bottom"] == 1
