"""What the datasets app does when a caption run changes, and its maintenance hook; registered
once from DatasetsConfig.ready()."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from datasets_app import caption_lifecycle
from datasets_app.caption_runs import run_out
from datasets_app.models import CaptionRun, RunStatus
from lorasite import events
from lorasite.core import maintenance
from lorasite.realtime import dataset_group, publish


def publish_run_status(run: CaptionRun, previous: str) -> None:
    """A `caption_run` message (the whole run) to the dataset's websocket group."""
    publish(dataset_group(run.dataset.uuid), {"type": "caption_run", **_jsonable(run_out(run, errors=20))})


def _jsonable(out: dict) -> dict:
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    return json.loads(json.dumps(out, cls=DjangoJSONEncoder))


def resume_stale_runs() -> int:
    """Re-send runs whose worker stopped writing heartbeats (killed, or its message lost while
    queued). The conditional UPDATE makes one worker's maintenance win; the claim makes the
    delivery safe even if two messages arrive."""
    from datasets_app.tasks import caption_run_actor

    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CAPTION_RUN_STALE_SECONDS)
    resent = 0
    stale = (CaptionRun.objects.filter(status__in=caption_lifecycle.ACTIVE, heartbeat_at__lt=cutoff)
             .filter(Q(resent_at__isnull=True) | Q(resent_at__lt=cutoff)))
    for run in stale.only("pk", "uuid", "status", "resent_at")[:100]:
        if run.status == RunStatus.CANCELLING:
            # Nobody is left to stop it: finish it as cancelled, keeping what was saved.
            caption_lifecycle.finish(run.pk)
            continue
        if CaptionRun.objects.filter(pk=run.pk, resent_at=run.resent_at).update(resent_at=now):
            caption_run_actor.send(str(run.uuid))
            resent += 1
    return resent


def register() -> None:
    events.listen(events.CAPTION_RUN_CHANGED, publish_run_status)
    maintenance.register("datasets.resume_stale_caption_runs", resume_stale_runs)
