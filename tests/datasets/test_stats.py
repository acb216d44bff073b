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


def test_sentence_captions_give_frequent_words_not_single_use_tags(dataset, member, viewer, api_for):
    images = make_images(dataset, 4)
    set_caption(images[0], "a red circle on a blue background", member)
    set_caption(images[1], "a green circle on a white background", member)
    set_caption(images[2], "ohwx, red hair, a woman standing in a field at sunset", member)
    set_caption(images[3], "ohwx, red hair, smiling", member)
    body = api_for(viewer).get(f"/api/datasets/{dataset.uuid}/stats").json()
    assert body["top_tags"] == [{"tag": "ohwx", "count": 2}, {"tag": "red hair", "count": 2},
                                {"tag": "smiling", "count": 1}]
    assert body["top_words"] == [{"word": "background", "count": 2}, {"word": "circle", "count": 2}]


def test_tag_and_word_rules():
    from datasets_app.stats import caption_tags, prose_words

    assert caption_tags("a photo of a dog") == []
    assert caption_tags("1girl, Solo,  looking at viewer ,") == ["1girl", "solo", "looking at viewer"]
    assert prose_words("ohwx, a dog running on the beach") == {"dog", "running", "beach"}
    assert prose_words("ohwx, dog, beach") == set()
