"""The team dashboard websocket: members receive their team group's messages."""

from __future__ import annotations

from channels.db import database_sync_to_async

from lorasite.accounts.models import Membership, Team
from lorasite.realtime import RelayConsumer, team_group


class TeamConsumer(RelayConsumer):
    async def connect(self):
        team = await self._team_if_member(self.scope["url_route"]["kwargs"]["team_id"])
        if team is None:
            # Decide before accepting: outsiders and anonymous users never see the stream.
            await self.close(code=4404)
            return
        await self.join(team_group(team.uuid))
        await self.accept()
        await self.send_json({"type": "hello", "team": str(team.uuid), "slug": team.slug})

    @database_sync_to_async
    def _team_if_member(self, team_id: str) -> Team | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        membership = Membership.objects.filter(team__uuid=team_id, user=user).select_related("team").first()
        return membership.team if membership else None
