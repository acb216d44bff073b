"""Clean-up that follows the deletion of a job (from the admin or a future retention policy)."""

from __future__ import annotations

from django.db.models.signals import post_delete
from django.dispatch import receiver

from datasets_app.storage import release_holds
from training_app.models import TrainingJob


@receiver(post_delete, sender=TrainingJob)
def _release_snapshot_blobs(sender, instance: TrainingJob, **kwargs) -> None:
    release_holds(instance.blob_holder)
