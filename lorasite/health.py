"""GET /healthz: is every component this process depends on reachable?"""

from __future__ import annotations

import asyncio
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from lorasite.broker import check_broker

PROBE_CONNECT_TIMEOUT_SECONDS = 3


def check_database() -> tuple[bool, str]:
    """Postgres is asked over a connection of the probe's own, with a short connect timeout: a pooled
    one would wait for the pool (DATABASE_POOL_TIMEOUT) through an outage, longer than a probe waits."""
    try:
        if connection.vendor == "postgresql":
            import psycopg

            params = {**connection.get_connection_params(), "connect_timeout": PROBE_CONNECT_TIMEOUT_SECONDS}
            with psycopg.connect(**params) as probe:
                probe.execute("SELECT 1").fetchone()
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        return True, connection.vendor
    except Exception as exc:
        return False, f"{connection.vendor} unreachable ({type(exc).__name__})"


def check_channel_layer() -> tuple[bool, str]:
    layer = get_channel_layer()
    if layer is None:
        return False, "no channel layer configured"
    kind = type(layer).__name__

    async def round_trip() -> bool:
        channel = await layer.new_channel()
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "health.check", "token": token})
        message = await asyncio.wait_for(layer.receive(channel), timeout=2)
        return message.get("token") == token

    try:
        ok = async_to_sync(round_trip)()
        return ok, kind if ok else f"{kind} returned a wrong message"
    except Exception as exc:
        return False, f"{kind} unreachable ({type(exc).__name__})"


@never_cache
@require_GET
def healthz(request):
    checks = {
        "database": check_database(),
        "broker": check_broker(),
        "channel_layer": check_channel_layer(),
    }
    healthy = all(ok for ok, _ in checks.values())
    body = {
        "status": "ok" if healthy else "degraded",
        "checks": {name: {"ok": ok, "detail": detail} for name, (ok, detail) in checks.items()},
    }
    return JsonResponse(body, status=200 if healthy else 503)
