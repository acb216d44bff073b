"""The dataset websocket: members of the dataset's team get a snapshot of its latest caption run,
then the run's live `caption_progress` and `caption_run` messages."""

from __future__ import annotations

import json

from channels.db import database_sync_to_async
from django.core.serializers.json import DjangoJSONEncoder

from lorasite.realtime import RelayConsumer, dataset_group


class DatasetConsumer(RelayConsumer):
    async def connect(self):
        dataset = await self._dataset_if_visible(self.scope["url_route"]["kwargs"]["dataset_id"])
        if dataset is None:
            await self.close(code=4404)  # decide before accepting: outsiders never see the stream
            return
        # Join before reading the snapshot: a message sent in between arrives twice at worst, never lost.
        await self.join(dataset_group(dataset.uuid))
        await self.accept()
        await self.send_json(await self._snapshot(dataset))

    @database_sync_to_async
    def _dataset_if_visible(self, dataset_id):
        from datasets_app.queries import get_dataset
        from lorasite.errors import NotFound

        try:
            return get_dataset(self.scope.get("user"), dataset_id)
        except NotFound:
            return None

    @database_sync_to_async
    def _snapshot(self, dataset) -> dict:
        from datasets_app.caption_runs import run_out, runs_for

        runs = runs_for(dataset, limit=1)
        latest = json.loads(json.dumps(run_out(runs[0], errors=20), cls=DjangoJSONEncoder)) if runs else None
        return {"type": "snapshot", "dataset": str(dataset.uuid), "caption_run": latest}
