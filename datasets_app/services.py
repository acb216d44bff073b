"""Dataset operations shared by the API, the pages, the admin and the management commands."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, QuerySet
from django.db.models.deletion import RestrictedError
from django.utils import timezone

from datasets_app.models import Dataset, DatasetImage, ReviewState
from lorasite.accounts.models import Team
from lorasite.errors import Conflict, InvalidInput


def create_dataset(team: Team, user, name: str, description: str = "", trigger_word: str = "",
                   default_resolution: int = 512) -> Dataset:
    name = name.strip()
    if not name:
        raise InvalidInput("Give the dataset a name.", [{"loc": ["name"], "msg": "required"}])
    try:
        with transaction.atomic():
            return Dataset.objects.create(team=team, name=name, description=description.strip(),
                                          trigger_word=trigger_word.strip(),
                                          default_resolution=default_resolution, created_by=user)
    except IntegrityError:
        raise Conflict(f"Team {team.slug} already has a dataset called “{name}”.") from None


def delete_dataset(dataset: Dataset) -> None:
    """Delete the dataset and its images; their files go once no other dataset shares them."""
    try:
        with transaction.atomic():
            dataset.delete()
    except (ProtectedError, RestrictedError):
        raise Conflict("This dataset is used by training jobs; delete those first.") from None


def set_review_state(images: QuerySet[DatasetImage] | Iterable[DatasetImage], state: str, user) -> int:
    """Approve, reject or reset images; returns how many changed. Resetting to pending forgets the reviewer."""
    state = ReviewState(state)
    if not isinstance(images, QuerySet):
        images = DatasetImage.objects.filter(pk__in=[i.pk for i in images])
    if state == ReviewState.PENDING:
        return images.exclude(review_state=state).update(review_state=state, reviewed_by=None, reviewed_at=None)
    return images.exclude(review_state=state).update(review_state=state, reviewed_by=user,
                                                     reviewed_at=timezone.now())


def set_repeats(image: DatasetImage, repeats: int) -> None:
    if not 1 <= repeats <= 1000:
        raise InvalidInput("Repeats must be between 1 and 1000.", [{"loc": ["repeats"], "msg": "out of range"}])
    DatasetImage.objects.filter(pk=image.pk).update(repeats=repeats)
    image.repeats = repeats


def delete_image(image: DatasetImage) -> None:
    with transaction.atomic():
        image.delete()
        Dataset.objects.filter(pk=image.dataset_id).update(updated_at=timezone.now())


def update_dataset(dataset: Dataset, **fields) -> Dataset:
    allowed = {"name", "description", "trigger_word", "default_resolution"}
    for key, value in fields.items():
        if key not in allowed:
            raise InvalidInput(f"Unknown field {key!r}.")
        setattr(dataset, key, value.strip() if isinstance(value, str) else value)
    if not dataset.name:
        raise InvalidInput("Give the dataset a name.", [{"loc": ["name"], "msg": "required"}])
    try:
        with transaction.atomic():
            dataset.save()
    except IntegrityError:
        raise Conflict(f"Team {dataset.team.slug} already has a dataset called “{dataset.name}”.") from None
    return dataset


def touch(dataset: Dataset) -> None:
    """Mark the dataset changed (images added or removed), for lists sorted by activity."""
    Dataset.objects.filter(pk=dataset.pk).update(updated_at=timezone.now())
