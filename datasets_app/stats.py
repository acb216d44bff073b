"""Dataset statistics for the stats panel and `GET /api/datasets/{id}/stats`."""

from __future__ import annotations

import re
from collections import Counter

from django.db.models import Avg, Count, Max, Min, Q
from django.db.models.functions import Length

from datasets_app.models import Dataset, DatasetImage, ReviewState

TOP_TAGS = 25
TOP_WORDS = 15
TOP_RESOLUTIONS = 10
# A comma-separated part of up to this many words is a tag ("red hair", "looking at viewer"); a
# longer one is a sentence ("a woman standing in a field at sunset").
TAG_MAX_WORDS = 4
_STOPWORDS = frozenset(
    "a an the of on in at with and or to is are was be for by from its it this that as into over under near "
    "there their his her he she they them we you i some very".split())
_WORD = re.compile(r"[^\W\d_]{3,}")


def caption_tags(caption: str) -> list[str]:
    """The tags of a comma-separated tag list; none for prose (a caption without commas is a sentence)."""
    if "," not in caption:
        return []
    return [part.strip().lower() for part in caption.split(",")
            if part.strip() and len(part.split()) <= TAG_MAX_WORDS]


def prose_words(caption: str) -> set[str]:
    """The content words of a caption's sentences (its parts that are not tags)."""
    parts = caption.split(",") if "," in caption else [caption]
    words: set[str] = set()
    for part in parts:
        if "," not in caption or len(part.split()) > TAG_MAX_WORDS:
            words.update(w for w in _WORD.findall(part.lower()) if w not in _STOPWORDS)
    return words


def dataset_stats(dataset: Dataset) -> dict:
    images = DatasetImage.objects.filter(dataset=dataset)
    totals = images.aggregate(
        total=Count("id"),
        with_captions=Count("id", filter=~Q(caption="")),
        avg_caption_length=Avg(Length("caption"), filter=~Q(caption="")),
        min_width=Min("width"), max_width=Max("width"), min_height=Min("height"), max_height=Max("height"),
        **{state.value: Count("id", filter=Q(review_state=state)) for state in ReviewState},
    )
    sizes = (images.values("width", "height").annotate(count=Count("id")).order_by("-count", "-width")
             [:TOP_RESOLUTIONS])
    groups: dict[int, list] = {}
    for uuid, anchor_uuid, anchor_pk in images.filter(near_duplicate_of__isnull=False).values_list(
            "uuid", "near_duplicate_of__uuid", "near_duplicate_of_id"):
        groups.setdefault(anchor_pk, [str(anchor_uuid)]).append(str(uuid))
    tags: Counter[str] = Counter()
    words: Counter[str] = Counter()
    for caption in images.exclude(caption="").values_list("caption", flat=True).iterator(chunk_size=2000):
        tags.update(set(caption_tags(caption)))
        words.update(prose_words(caption))
    return {
        "total_images": totals["total"],
        "images_with_captions": totals["with_captions"],
        "avg_caption_length": round(totals["avg_caption_length"] or 0.0, 1),
        "review_states": {state.value: totals[state.value] for state in ReviewState},
        "resolution": {
            "min_width": totals["min_width"], "max_width": totals["max_width"],
            "min_height": totals["min_height"], "max_height": totals["max_height"],
            "common": [{"width": s["width"], "height": s["height"], "count": s["count"]} for s in sizes],
        },
        "duplicate_groups": list(groups.values()),
        "top_tags": [{"tag": tag, "count": count}
                     for tag, count in sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TAGS]],
        # A word in one sentence only says nothing about the dataset.
        "top_words": [{"word": word, "count": count}
                      for word, count in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
                      if count > 1][:TOP_WORDS],
    }
