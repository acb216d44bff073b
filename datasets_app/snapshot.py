"""A frozen, digestible description of what a dataset would train on right now (used by training jobs)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.core.files.storage import default_storage

from datasets_app.models import Dataset, DatasetImage, ReviewState

DEFAULT_STATES = (ReviewState.APPROVED, ReviewState.PENDING)


def build_snapshot(dataset: Dataset, include_states: Iterable[str] = DEFAULT_STATES) -> dict:
    """Images, captions and repeats of `dataset` in the given review states, plus a content digest.

    Rejected images never train, whatever the caller asks for. The digest covers only what changes the
    training result (bytes, caption, repeats), so the same data gives the same digest across datasets.
    """
    states = [ReviewState(s).value for s in include_states if ReviewState(s) != ReviewState.REJECTED]
    rows = (DatasetImage.objects.filter(dataset=dataset, review_state__in=states)
            .select_related("blob").order_by("id"))
    images = []
    for image in rows:
        name = image.blob.file.name
        images.append({
            "id": str(image.uuid),
            "sha256": image.sha256,
            "path": default_storage.path(name),
            "storage_name": name,
            "caption": image.caption,
            "repeats": image.repeats,
            "width": image.width,
            "height": image.height,
        })
    lines = sorted(f"{i['sha256']}\t{i['repeats']}\t{i['caption']}" for i in images)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {
        "dataset": {"id": str(dataset.uuid), "name": dataset.name, "trigger_word": dataset.trigger_word,
                    "default_resolution": dataset.default_resolution},
        "images": images,
        "sha256": digest,
        "image_count": len(images),
    }
