"""Under daphne each request runs in its own thread: the connection count must stay bounded by the
pool, however many clients come at once (persistent per-thread connections once exhausted Postgres)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.db import connection

from lorasite.accounts.models import ApiToken
from tests.services import bin_path, free_port, production_env, start_process, stop_process, wait_for_port

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _connections_to_this_database(ignore: tuple[int, ...] = ()) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))", [list(ignore)])
        return cursor.fetchone()[0]


def test_fifty_concurrent_api_clients_stay_within_the_pool(member, dataset_a):
    if connection.vendor != "postgresql":
        pytest.skip("the pool is Postgres' (SQLite has no server connections)")
    token = ApiToken.issue(member, "load")[1]
    port = free_port()
    web = start_process([bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"],
                        production_env(DATABASE_POOL_SIZE="4", ALLOWED_HOSTS="127.0.0.1"))
    peak, stop, watcher_pid = [0], threading.Event(), []
    # Connections that are not the server's: others before it starts, and this thread's own.
    before = _connections_to_this_database()

    def watch():
        connection.ensure_connection()
        watcher_pid.append(connection.connection.info.backend_pid)
        while not stop.wait(0.05):
            peak[0] = max(peak[0], _connections_to_this_database() - before - 1)
        connection.close()

    try:
        wait_for_port(port, web)
        watcher = threading.Thread(target=watch)
        watcher.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"Authorization": f"Bearer {token}"},
                          limits=httpx.Limits(max_connections=50)) as client, ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(lambda _: client.get(f"/api/datasets/{dataset_a.uuid}/images").status_code,
                                     range(300)))
        stop.set()
        watcher.join()
        # The watcher's backend may still be listed for a moment after it closed: not the server's.
        after = _connections_to_this_database(ignore=tuple(watcher_pid)) - before
    finally:
        stop.set()
        log = stop_process(web)
    assert statuses == [200] * 300, {s: statuses.count(s) for s in set(statuses)}
    assert peak[0] <= 4, f"{peak[0]} connections at the peak"
    assert after <= 4
    assert "Traceback" not in log, log
