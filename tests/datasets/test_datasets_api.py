"""Creating, listing, reading, changing and deleting datasets through the API."""

from __future__ import annotations

import uuid

from datasets_app.models import Dataset, DatasetImage, StoredBlob
from lorasite.accounts.models import Membership, Role
from tests.datasets.conftest import distinct_images


def test_member_of_one_team_creates_a_dataset_without_naming_the_team(member, api_for):
    response = api_for(member).post("/api/datasets", {"name": "faces", "trigger_word": "ohwx",
                                                      "description": "portraits"})
    assert response.status_code == 201, response.json()
    body = response.json()
    uuid.UUID(body["id"])
    assert (body["team"], body["name"], body["trigger_word"], body["image_count"]) == ("alpha", "faces", "ohwx", 0)
    assert body["created_by"] == "mia" and body["default_resolution"] == 512


def test_user_in_several_teams_must_say_which(member, team_b, api_for):
    Membership.objects.create(team=team_b, user=member, role=Role.MEMBER)
    response = api_for(member).post("/api/datasets", {"name": "x"})
    assert response.status_code == 422
    assert api_for(member).post("/api/datasets", {"name": "x", "team": "bravo"}).json()["team"] == "bravo"


def test_dataset_names_are_unique_within_a_team(member, api_for):
    api_for(member).post("/api/datasets", {"name": "faces"})
    response = api_for(member).post("/api/datasets", {"name": "faces"})
    assert response.status_code == 409 and "already has a dataset" in response.json()["detail"]


def test_viewer_cannot_create_a_dataset(viewer, api_for):
    assert api_for(viewer).post("/api/datasets", {"name": "faces", "team": "alpha"}).status_code == 403


def test_outsider_cannot_create_in_another_team(outsider, team_a, api_for):
    response = api_for(outsider).post("/api/datasets", {"name": "faces", "team": "alpha"})
    assert response.status_code == 404


def test_list_shows_only_the_users_teams_datasets(dataset, other_dataset, viewer, outsider, api_for):
    assert [d["name"] for d in api_for(viewer).get("/api/datasets").json()] == ["faces"]
    assert [d["name"] for d in api_for(outsider).get("/api/datasets").json()] == ["bravo-set"]


def test_get_dataset_counts_its_images(dataset, member, viewer, upload, api_for):
    upload(member, dataset, {f"{i}.png": data for i, data in enumerate(distinct_images(3))})
    body = api_for(viewer).get(f"/api/datasets/{dataset.uuid}").json()
    assert body["image_count"] == 3 and body["id"] == str(dataset.uuid)


def test_outsider_gets_404_for_dataset(dataset, outsider, api_for):
    client = api_for(outsider)
    assert client.get(f"/api/datasets/{dataset.uuid}").status_code == 404
    assert client.patch(f"/api/datasets/{dataset.uuid}", {"name": "mine"}).status_code == 404
    assert client.delete(f"/api/datasets/{dataset.uuid}").status_code == 404
    assert client.get(f"/api/datasets/{uuid.uuid4()}").status_code == 404
    assert Dataset.objects.filter(pk=dataset.pk).exists()


def test_member_renames_and_sets_trigger_word(dataset, member, api_for):
    response = api_for(member).patch(f"/api/datasets/{dataset.uuid}", {"trigger_word": "zkw", "default_resolution": 768})
    assert response.status_code == 200
    dataset.refresh_from_db()
    assert (dataset.trigger_word, dataset.default_resolution) == ("zkw", 768)


def test_viewer_cannot_change_or_delete_a_dataset(dataset, viewer, api_for):
    assert api_for(viewer).patch(f"/api/datasets/{dataset.uuid}", {"name": "x"}).status_code == 403
    assert api_for(viewer).delete(f"/api/datasets/{dataset.uuid}").status_code == 403
    assert Dataset.objects.filter(pk=dataset.pk).exists()


def test_deleting_a_dataset_removes_its_images_and_unshared_files(dataset, member, upload, api_for,
                                                                   django_capture_on_commit_callbacks, team_a):
    shared, own = distinct_images(2)
    other = Dataset.objects.create(team=team_a, name="keeps-one")
    upload(member, dataset, {"shared.png": shared, "own.png": own})
    upload(member, other, {"shared.png": shared})
    own_blob = StoredBlob.objects.get(sha256=DatasetImage.objects.get(original_name="own.png").sha256)
    own_path = own_blob.file.path
    with django_capture_on_commit_callbacks(execute=True):
        assert api_for(member).delete(f"/api/datasets/{dataset.uuid}").status_code == 204
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert StoredBlob.objects.count() == 1  # the shared one stays for the other dataset
    import os

    assert not os.path.exists(own_path)
    assert os.path.exists(StoredBlob.objects.get().file.path)
