"""GET /api/datasets/{id}/stats: counts, caption lengths, resolutions, duplicates and top tags."""

from __future__ import annotations

from datasets_app.captions import set_caption
from datasets_app.models import DatasetImage
from tests.datasets.test_images_api import make_images


def test_stats_summarise_the_dataset(dataset, member, viewer, api_for):
    images = make_images(dataset, 4)
    make_images(dataset, 1, "approved")
    make_images(dataset, 1, "rejected")
    set_caption(images[0], "ohwx, red hair, smiling", member)
    set_caption(images[1], "ohwx, Red Hair", member)
    DatasetImage.objects.filter(pk=images[2].pk).update(width=1024, height=768)
    DatasetImage.objects.filter(pk=images[3].pk).update(near_duplicate_of=images[2])
    body = api_for(viewer).get(f"/api/datasets/{dataset.uuid}/stats").json()
    assert body["total_images"] == 6 and body["images_with_captions"] == 2
    assert body["avg_caption_length"] == round((23 + 14) / 2, 1)
    assert body["review_states"] == {"pending": 4, "approved": 1, "rejected": 1}
    assert body["resolution"]["max_width"] == 1024 and body["resolution"]["min_width"] == 64
    assert body["resolution"]["common"][0] == {"width": 64, "height": 48, "count": 5}
    assert body["duplicate_groups"] == [[str(images[2].uuid), str(images[3].uuid)]]
    assert body["top_tags"][:2] == [{"tag": "ohwx", "count": 2}, {"tag": "red hair", "count": 2}]


def test_stats_of_an_empty_dataset(dataset, viewer, api_for):
    body = api_for(viewer).get(f"/api/datasets/{dataset.uuid}/stats").json()
    assert body["total_images"] == 0 and body["avg_caption_length"] == 0 and body["top_tags"] == []


def test_outsider_gets_404_for_stats(dataset, outsider, api_for):
    assert api_for(outsider).get(f"/api/datasets/{dataset.uuid}/stats").status_code == 404
