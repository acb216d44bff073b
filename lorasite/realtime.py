"""Publishing to websocket groups from any thread: request handlers, actors, the trainer's reporter.

Group names: `team.<team uuid>`, `job.<job uuid>`, `dataset.<dataset uuid>`. Consumers relay the
payload unchanged, so the payload is exactly the JSON the browser receives.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer

logger = logging.getLogger(__name__)

RELAY_TYPE = "relay.message"
# Sent to a user's group when their access may have shrunk (removed from a team, token revoked,
# account deactivated): each of their sockets checks again and closes with 4403 if it lost access.
ACCESS_CHANGED_TYPE = "access.changed"
_embedded_loop: asyncio.AbstractEventLoop | None = None
_publisher_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()
_pending: set[asyncio.Task] = set()


def team_group(team_uuid) -> str:
    return f"team.{team_uuid}"


def job_group(job_uuid) -> str:
    return f"job.{job_uuid}"


def dataset_group(dataset_uuid) -> str:
    return f"dataset.{dataset_uuid}"


def user_group(user_id) -> str:
    return f"user.{user_id}"


def register_embedded_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """In embedded mode the in-memory channel layer lives on the server's event loop; worker threads
    must hand their messages to that loop, since asyncio queues are not thread-safe."""
    global _embedded_loop
    with _loop_lock:
        _embedded_loop = loop


def _publisher() -> asyncio.AbstractEventLoop:
    global _publisher_loop
    with _loop_lock:
        if _publisher_loop is None or _publisher_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="lorasite-publisher", daemon=True).start()
            _publisher_loop = loop
        return _publisher_loop


def publish(group: str, payload: dict[str, Any]) -> None:
    """Send `payload` to every websocket in `group`. Never raises: progress is best-effort, the
    database stays the source of truth and clients re-sync from a snapshot."""
    _group_send(group, {"type": RELAY_TYPE, "payload": payload})


def announce_access_change(user_id: int) -> None:
    """Every open socket of this user re-checks its access (call it after the change commits)."""
    _group_send(user_group(user_id), {"type": ACCESS_CHANGED_TYPE})


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            # Called from async code in this thread: blocking here would deadlock its loop.
            task = running.create_task(layer.group_send(group, message))
            _pending.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(_pending.discard)
            return
        loop = _embedded_loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).result(timeout=5)
        elif isinstance(layer, InMemoryChannelLayer):
            # In-memory queues belong to the caller's event loop; async_to_sync reuses it.
            async_to_sync(layer.group_send)(group, message)
        else:
            # async_to_sync would start a thread, a loop and a Redis connection per call (~2 ms);
            # one long-lived loop per process keeps its connection pool (~0.25 ms a publish).
            asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _publisher()).result(timeout=5)
    except Exception:
        logger.warning("could not publish to %s", group, exc_info=True)


class RelayConsumer(AsyncJsonWebsocketConsumer):
    """Base for consumers that relay one group's payloads: subclasses decide access in `connect`
    (before accepting) and call `join(group)`; `still_allowed` repeats that decision when the user's
    access changes, and a socket that lost it is closed with 4403."""

    group: str | None = None
    user_group_name: str | None = None

    async def still_allowed(self) -> bool:
        """The subclass's own check again, against fresh rows (the scope's user is a cached object)."""
        raise NotImplementedError

    async def dispatch(self, message):
        # Channels closes stale database connections before every handler, a hop to the shared sync
        # thread; relaying touches no database, and with 200 watchers that hop is most of the cost.
        if message["type"] == RELAY_TYPE:
            await self.relay_message(message)
        else:
            await super().dispatch(message)

    async def join(self, group: str) -> None:
        self.group = group
        await self.channel_layer.group_add(group, self.channel_name)
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.user_group_name = user_group(user.pk)
            await self.channel_layer.group_add(self.user_group_name, self.channel_name)

    async def disconnect(self, code):
        for group in (self.group, self.user_group_name):
            if group:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def access_changed(self, event):
        if not await self.still_allowed():
            await self.close(code=4403)

    async def relay_message(self, event):
        await self.send_json(event["payload"])

    async def receive_json(self, content, **kwargs):
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})
