"""The team dashboard websocket: members receive their team group's messages, after a snapshot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from lorasite.accounts import access
from lorasite.accounts.auth import current_socket_user
from lorasite.accounts.models import Team
from lorasite.errors import NotFound, PermissionDenied
from lorasite.realtime import RelayConsumer, team_group

# Apps that have something to show on the dashboard add to the snapshot (training: active jobs).
_snapshot_parts: dict[str, Callable[[Team], Any]] = {}


def register_snapshot_part(name: str, build: Callable[[Team], Any]) -> None:
    _snapshot_parts[name] = build


class TeamConsumer(RelayConsumer):
    async def connect(self):
        team = await self._team_if_member(self.scope["url_route"]["kwargs"]["team_id"])
        if team is None:
            # Decide before accepting: outsiders and anonymous users never see the stream.
            await self.close(code=4404)
            return
        # Join before reading the snapshot: a message sent in between arrives twice at worst, never lost.
        await self.join(team_group(team.uuid))
        await self.accept()
        await self.send_json(await self._snapshot(team))

    @database_sync_to_async
    def _team_if_member(self, team_id: str, user=None) -> Team | None:
        try:
            return access.get_team(user or self.scope.get("user"), team_id)
        except (NotFound, PermissionDenied):
            return None

    async def still_allowed(self) -> bool:
        user = await database_sync_to_async(current_socket_user)(self.scope)
        team_id = self.scope["url_route"]["kwargs"]["team_id"]
        return user is not None and await self._team_if_member(team_id, user) is not None

    @database_sync_to_async
    def _snapshot(self, team: Team) -> dict[str, Any]:
        message = {"type": "snapshot", "team": str(team.uuid), "slug": team.slug}
        for name, build in _snapshot_parts.items():
            message[name] = build(team)
        return message
