"""The dataset websocket (`/ws/datasets/<uuid>/`): team members get a snapshot of the latest caption
run, then its live progress (counts plus the new captions) and status; nobody else connects."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator

from datasets_app import caption_runs
from datasets_app.caption_providers import create_provider
from datasets_app.caption_runner import execute_run
from lorasite.accounts.models import ApiToken
from lorasite.asgi import application
from tests.conftest import make_dataset
from tests.foundation.test_team_socket import session_cookie

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def communicator(dataset, headers=()):
    return WebsocketCommunicator(application, f"/ws/datasets/{dataset.uuid}/",
                                 headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), *headers])


@sync_to_async
def setup(team, user):
    dataset = make_dataset(team, user, count=4, captions=False)
    create_provider(team, name="tpl", type="simple", prompt="a photo of {trigger}, {filename}")
    return dataset


async def test_member_sees_the_run_progress_and_the_new_captions(team_a, member):
    dataset = await setup(team_a, member)
    ws = communicator(dataset, [(b"cookie", await session_cookie(member))])
    connected, _ = await ws.connect()
    assert connected
    assert await ws.receive_json_from() == {"type": "snapshot", "dataset": str(dataset.uuid), "caption_run": None}
    run = await sync_to_async(caption_runs.start_run)(dataset, member, "tpl", None, "uncaptioned", [])
    queued = await ws.receive_json_from(timeout=5)
    assert (queued["type"], queued["status"], queued["id"]) == ("caption_run", "queued", str(run.uuid))
    await sync_to_async(execute_run)(str(run.uuid))
    messages = []
    while True:
        message = await ws.receive_json_from(timeout=5)
        messages.append(message)
        if message["type"] == "caption_run" and message["status"] == "completed":
            break
    progress = [m for m in messages if m["type"] == "caption_progress"]
    assert progress[-1]["done"] == 4 and progress[-1]["percent"] == 100.0
    captions = {c["image"]: c["caption"] for m in progress for c in m["captions"]}
    assert sorted(captions.values()) == [f"a photo of shp, img{i}" for i in range(4)]
    assert all(c["tokens"] > 0 for m in progress for c in m["captions"])
    await ws.disconnect()
    # A client that connects later re-syncs from the snapshot.
    late = communicator(dataset, [(b"cookie", await session_cookie(member))])
    await late.connect()
    snapshot = await late.receive_json_from()
    assert (snapshot["caption_run"]["status"], snapshot["caption_run"]["done"]) == ("completed", 4)
    await late.disconnect()


async def test_outsider_is_refused_by_the_dataset_socket(team_a, member, outsider):
    dataset = await setup(team_a, member)
    connected, code = await communicator(dataset, [(b"cookie", await session_cookie(outsider))]).connect()
    assert not connected and code == 4404


async def test_anonymous_is_refused_by_the_dataset_socket(team_a, member):
    dataset = await setup(team_a, member)
    connected, _ = await communicator(dataset).connect()
    assert not connected


async def test_a_bearer_token_opens_the_dataset_socket(team_a, member):
    dataset = await setup(team_a, member)
    _, raw = await sync_to_async(ApiToken.issue)(member, "script")
    ws = WebsocketCommunicator(application, f"/ws/datasets/{dataset.uuid}/",
                               headers=[(b"authorization", f"Bearer {raw}".encode()), (b"host", b"127.0.0.1")])
    connected, _ = await ws.connect()
    assert connected and (await ws.receive_json_from())["type"] == "snapshot"
    await ws.disconnect()
