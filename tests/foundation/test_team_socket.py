"""The team dashboard websocket: members get the team group's messages, nobody else connects."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from lorasite.accounts.models import ApiToken
from lorasite.asgi import application
from lorasite.realtime import team_group

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@sync_to_async
def session_cookie(user) -> bytes:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.save()
    return f"sessionid={session.session_key}".encode()


def communicator(team, headers=()):
    return WebsocketCommunicator(application, f"/ws/teams/{team.uuid}/",
                                 headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), *headers])


async def test_member_receives_team_messages(team_a, member):
    ws = communicator(team_a, [(b"cookie", await session_cookie(member))])
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from())["type"] == "snapshot"
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    from channels.layers import get_channel_layer

    await get_channel_layer().group_send(team_group(team_a.uuid),
                                         {"type": "relay.message", "payload": {"type": "status", "job": "x"}})
    assert await ws.receive_json_from() == {"type": "status", "job": "x"}
    await ws.disconnect()


async def test_outsider_is_refused(team_a, member, outsider):
    ws = communicator(team_a, [(b"cookie", await session_cookie(outsider))])
    connected, code = await ws.connect()
    assert not connected and code == 4404


async def test_anonymous_is_refused(team_a, member):
    connected, _ = await communicator(team_a).connect()
    assert not connected


async def test_bearer_token_opens_the_socket_without_origin(team_a, member):
    _, raw = await sync_to_async(ApiToken.issue)(member, "script")
    ws = WebsocketCommunicator(application, f"/ws/teams/{team_a.uuid}/",
                               headers=[(b"authorization", f"Bearer {raw}".encode())])
    connected, _ = await ws.connect()
    assert connected
    await ws.disconnect()


async def test_revoked_token_is_refused(team_a, member):
    token, raw = await sync_to_async(ApiToken.issue)(member, "script")
    await sync_to_async(token.revoke)()
    ws = WebsocketCommunicator(application, f"/ws/teams/{team_a.uuid}/",
                               headers=[(b"authorization", f"Bearer {raw}".encode())])
    connected, _ = await ws.connect()
    assert not connected


async def test_foreign_origin_is_refused_even_with_a_valid_session(team_a, member):
    ws = WebsocketCommunicator(application, f"/ws/teams/{team_a.uuid}/",
                               headers=[(b"origin", b"http://evil.example"), (b"cookie", await session_cookie(member))])
    connected, _ = await ws.connect()
    assert not connected


async def test_dashboard_socket_starts_with_a_snapshot_of_active_jobs(team_a, member, dataset_a, tiny_base_model):
    from training_app.services import submit_job

    job = await sync_to_async(submit_job)(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15",
                                          config={"resolution": 64, "max_steps": 3})
    ws = communicator(team_a, [(b"cookie", await session_cookie(member))])
    connected, _ = await ws.connect()
    assert connected
    snapshot = await ws.receive_json_from()
    assert snapshot["type"] == "snapshot" and snapshot["slug"] == team_a.slug
    assert [(j["job"], j["status"], j["total_steps"]) for j in snapshot["jobs"]] == [(str(job.uuid), "queued", 3)]
    await ws.disconnect()


async def _closed_with(ws, code, timeout=5):
    import asyncio

    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive_output(timeout)
            if message["type"] == "websocket.close":
                return message.get("code") == code


async def test_a_removed_member_is_disconnected_at_once_with_4403(team_a, owner, member):
    from lorasite.accounts.services import remove_membership

    ws = communicator(team_a, [(b"cookie", await session_cookie(member))])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["type"] == "snapshot"
    await sync_to_async(remove_membership)(team_a, member.username)
    assert await _closed_with(ws, 4403)


async def test_a_revoked_token_closes_the_sockets_it_opened_but_not_the_browsers(team_a, member):
    token, raw = await sync_to_async(ApiToken.issue)(member, "script")
    script = communicator(team_a, [(b"authorization", f"Bearer {raw}".encode())])
    browser = communicator(team_a, [(b"cookie", await session_cookie(member))])
    for ws in (script, browser):
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from())["type"] == "snapshot"
    await sync_to_async(token.revoke)()
    assert await _closed_with(script, 4403)
    # The browser session is still a member's: it keeps its stream.
    await browser.send_json_to({"type": "ping"})
    assert await browser.receive_json_from() == {"type": "pong"}
    await browser.disconnect()


async def test_a_deactivated_account_is_disconnected(team_a, member):
    ws = communicator(team_a, [(b"cookie", await session_cookie(member))])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["type"] == "snapshot"
    member.is_active = False
    await sync_to_async(member.save)()
    assert await _closed_with(ws, 4403)


async def test_a_removed_member_loses_the_job_socket_too(team_a, owner, member, dataset_a, tiny_base_model):
    from lorasite.accounts.services import remove_membership
    from training_app.services import submit_job

    job = await sync_to_async(submit_job)(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15",
                                          config={"resolution": 64})
    ws = WebsocketCommunicator(application, f"/ws/jobs/{job.uuid}/",
                               headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
                                        (b"cookie", await session_cookie(member))])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["type"] == "snapshot"
    await sync_to_async(remove_membership)(team_a, member.username)
    assert await _closed_with(ws, 4403)
