"""Dataset pages and the views that serve image bytes: members see them, outsiders get 404."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client
from PIL import Image

from datasets_app.models import Dataset, DatasetImage
from tests.datasets.conftest import distinct_images, image_bytes


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(db):
    """A superuser in no team (pytest-django's staff_client would pick up our team `admin_user`)."""
    from django.contrib.auth import get_user_model

    return logged_in(get_user_model().objects.create_superuser("root", "root@example.com", "root-pass-123"))


@pytest.fixture
def with_images(dataset, member, upload):
    a, _b = distinct_images(2)
    upload(member, dataset, {"a.png": a, "a.txt": b"ohwx, first", "b.tiff": image_bytes("TIFF", seed=4)})
    return dataset


def test_dataset_list_shows_the_teams_datasets_and_creates_one(dataset, member):
    client = logged_in(member)
    page = client.get("/teams/alpha/datasets/")
    assert page.status_code == 200 and b"faces" in page.content
    response = client.post("/teams/alpha/datasets/", {"name": "new set", "trigger_word": "zz",
                                                      "default_resolution": "768"})
    created = Dataset.objects.get(name="new set")
    assert response.status_code == 302 and response["Location"] == f"/teams/alpha/datasets/{created.uuid}/"
    assert created.default_resolution == 768


def test_dataset_page_shows_grid_stats_and_tools(with_images, member):
    page = logged_in(member).get(f"/teams/alpha/datasets/{with_images.uuid}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('class="ds-card"') == 2 and "ohwx, first" in html
    assert "Caption tools" in html and "data-dropzone" in html and "Top tags" in html


def test_dataset_page_filters_by_review_state(with_images, member):
    DatasetImage.objects.filter(original_name="a.png").update(review_state="approved")
    html = logged_in(member).get(f"/teams/alpha/datasets/{with_images.uuid}/?state=approved").content.decode()
    assert html.count('class="ds-card"') == 1 and "a.png" in html


def test_viewer_sees_the_page_without_write_controls_and_cannot_post(with_images, viewer):
    client = logged_in(viewer)
    html = client.get(f"/teams/alpha/datasets/{with_images.uuid}/").content.decode()
    assert "data-dropzone" not in html and "Caption tools" not in html and "readonly" in html
    assert client.post("/teams/alpha/datasets/", {"name": "nope"}).status_code == 403
    assert client.post(f"/teams/alpha/datasets/{with_images.uuid}/edit/", {"name": "x"}).status_code == 403
    assert client.post(f"/teams/alpha/datasets/{with_images.uuid}/delete/").status_code == 403
    assert Dataset.objects.filter(pk=with_images.pk, name="faces").exists()


def test_review_page_renders_for_members(with_images, member):
    page = logged_in(member).get(f"/teams/alpha/datasets/{with_images.uuid}/review/?state=pending")
    assert page.status_code == 200 and b"data-review-page" in page.content


def test_thumbnail_and_file_are_served_to_members_privately(with_images, viewer):
    client = logged_in(viewer)
    image = DatasetImage.objects.get(original_name="a.png")
    thumb = client.get(f"/images/{image.uuid}/thumbnail")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    assert thumb["Cache-Control"].startswith("private") and thumb["X-Content-Type-Options"] == "nosniff"
    original = client.get(f"/images/{image.uuid}/file")
    assert b"".join(original.streaming_content) == image.blob.file.open("rb").read()


def test_tiff_is_shown_as_png_and_downloaded_as_itself(with_images, viewer):
    client = logged_in(viewer)
    image = DatasetImage.objects.get(format="TIFF")
    shown = client.get(f"/images/{image.uuid}/file")
    assert shown["Content-Type"] == "image/png" and Image.open(io.BytesIO(shown.content)).format == "PNG"
    download = client.get(f"/images/{image.uuid}/file?download=1")
    assert download["Content-Disposition"].startswith("attachment")


def test_image_bytes_can_be_fetched_with_a_bearer_token(with_images, viewer, api_for):
    image = DatasetImage.objects.first()
    assert api_for(viewer).get(f"/images/{image.uuid}/thumbnail").status_code == 200
    assert Client().get(f"/images/{image.uuid}/thumbnail").status_code == 404


def test_outsider_gets_404_for_dataset_pages_and_image_bytes(with_images, outsider):
    client = logged_in(outsider)
    image = DatasetImage.objects.first()
    for url in ["/teams/alpha/datasets/", f"/teams/alpha/datasets/{with_images.uuid}/",
                f"/teams/alpha/datasets/{with_images.uuid}/review/", f"/images/{image.uuid}/thumbnail",
                f"/images/{image.uuid}/file", f"/teams/bravo/datasets/{with_images.uuid}/"]:
        assert client.get(url).status_code == 404, url
    assert client.post(f"/teams/alpha/datasets/{with_images.uuid}/delete/").status_code == 404
    assert Dataset.objects.filter(pk=with_images.pk).exists()


def test_staff_see_thumbnails_in_the_admin_with_captions_editable(with_images, staff_client):
    page = staff_client.get("/admin/datasets/datasetimage/")
    html = page.content.decode()
    assert page.status_code == 200 and "/thumbnail" in html and 'name="form-0-caption"' in html
    image = DatasetImage.objects.get(original_name="a.png")
    assert staff_client.get(f"/images/{image.uuid}/thumbnail").status_code == 200
    detail = staff_client.get(f"/admin/datasets/datasetimage/{image.pk}/change/")
    assert detail.status_code == 200 and "Caption history" in detail.content.decode()


def test_admin_caption_edit_in_the_list_adds_a_version(with_images, staff_client):
    images = list(DatasetImage.objects.order_by("id"))
    data = {"form-TOTAL_FORMS": "2", "form-INITIAL_FORMS": "2", "form-MIN_NUM_FORMS": "0",
            "form-MAX_NUM_FORMS": "1000", "_save": "Save"}
    for i, image in enumerate(images):
        data[f"form-{i}-id"] = str(image.pk)
        data[f"form-{i}-caption"] = image.caption
    data["form-0-caption"] = "ohwx, edited in admin"
    response = staff_client.post("/admin/datasets/datasetimage/", data)
    assert response.status_code == 302
    first = DatasetImage.objects.get(pk=images[0].pk)
    assert first.caption == "ohwx, edited in admin"
    assert list(first.captions.order_by("id").values_list("text", "is_current")) == [
        ("ohwx, first", False), ("ohwx, edited in admin", True)]


def test_admin_bulk_actions_approve_and_reject(with_images, staff_client):
    ids = [str(pk) for pk in DatasetImage.objects.values_list("pk", flat=True)]
    staff_client.post("/admin/datasets/datasetimage/", {"action": "approve", "_selected_action": ids})
    assert set(DatasetImage.objects.values_list("review_state", flat=True)) == {"approved"}
    staff_client.post("/admin/datasets/datasetimage/", {"action": "reject", "_selected_action": ids[:1]})
    assert DatasetImage.objects.filter(review_state="rejected").count() == 1


def test_seed_demo_draws_an_approved_shapes_dataset_once(team_a, owner):
    from datasets_app.demo import seed_demo

    out = io.StringIO()
    seed_demo(team_a, owner, out)
    seed_demo(team_a, owner, out)
    dataset = Dataset.objects.get(name="demo-shapes")
    assert dataset.images.count() == 12 and dataset.trigger_word == "shp"
    assert set(dataset.images.values_list("review_state", flat=True)) == {"approved"}
    assert dataset.images.filter(caption="shp, a red circle on a blue background").exists()
    assert out.getvalue().splitlines()[-1] == "dataset demo-shapes: 12 images (0 new)"
    call_command("check")


def test_crop_preview_offers_the_datasets_own_resolution(team_a, owner):
    import re

    from datasets_app.demo import seed_demo

    seed_demo(team_a, owner, io.StringIO())
    dataset = Dataset.objects.get(name="demo-shapes")
    html = logged_in(owner).get(f"/teams/alpha/datasets/{dataset.uuid}/").content.decode()
    select = re.search(r"<select data-crop-resolution.*?</select>", html, flags=re.S).group(0)
    options = re.findall(r'<option value="(\d+)"( selected)?', select)
    # The demo trains at 64 px and its images are 128 px; SD 1.5 and SDXL sizes stay on offer.
    assert [int(v) for v, _ in options] == [64, 128, 512, 768, 1024]
    assert [int(v) for v, chosen in options if chosen] == [64]
