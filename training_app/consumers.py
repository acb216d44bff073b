"""The job websocket: a snapshot on connect (so reconnecting clients re-sync), then live messages."""

from __future__ import annotations

from channels.db import database_sync_to_async

from lorasite.accounts import access
from lorasite.accounts.auth import current_socket_user
from lorasite.errors import NotFound
from lorasite.realtime import RelayConsumer, job_group
from training_app.artifacts import artifact_url
from training_app.charts import downsampled_loss_points
from training_app.models import ArtifactKind, TrainingJob
from training_app.reporting import phase_state, progress_payload

SNAPSHOT_POINTS = 1000


class JobConsumer(RelayConsumer):
    async def connect(self):
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        job = await self._job_if_visible(job_id)
        if job is None:
            await self.close(code=4404)
            return
        # Join before reading the snapshot: a message sent in between arrives twice at worst, never lost.
        await self.join(job_group(job.uuid))
        await self.accept()
        await self.send_json(await self._snapshot(job.pk))

    @database_sync_to_async
    def _job_if_visible(self, job_id, user=None):
        try:
            return access.get_visible(TrainingJob.objects.select_related("team"), user or self.scope.get("user"),
                                      uuid=job_id)
        except NotFound:
            return None

    async def still_allowed(self) -> bool:
        user = await database_sync_to_async(current_socket_user)(self.scope)
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        return user is not None and await self._job_if_visible(job_id, user) is not None

    @database_sync_to_async
    def _snapshot(self, job_pk):
        job = TrainingJob.objects.select_related("team").get(pk=job_pk)
        points = downsampled_loss_points(job, max_points=SNAPSHOT_POINTS)
        samples = job.artifacts.filter(kind=ArtifactKind.SAMPLE).select_related("job")
        return {
            **progress_payload(job),
            "type": "snapshot",
            "status": job.status,
            "error": job.error or None,
            "attempts": job.attempts,
            "phase": phase_state(job),
            "loss_points": [[p.step, p.loss, p.lr] for p in points],
            "samples": [{"step": a.step, "url": artifact_url(a), "prompt": a.prompt} for a in samples],
            "logs": [log.line for log in job.logs.order_by("-id")[:100]][::-1],
        }
