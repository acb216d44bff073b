"""Faults on real services, for one daphne behind a loopback proxy (tests/faults.py) while the shared
servers go on serving every other test: Postgres, or Redis, goes away and comes back."""

from __future__ import annotations

import httpx
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from lorasite.accounts.models import ApiToken
from tests.faults import CuttableProxy
from tests.services import RedisStack, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_a_postgres_outage_answers_503_at_once_and_the_portal_recovers_without_a_restart(settings, member, team_a):
    if connection.vendor != "postgresql":
        pytest.skip("needs Postgres")
    db = connection.settings_dict
    proxy = CuttableProxy(db["HOST"], int(db["PORT"]))
    token = ApiToken.issue(member, "faults")[1]
    browser = Client()
    browser.force_login(member)  # a signed-in browser: its pages need the database for the session
    session = browser.cookies[django_settings.SESSION_COOKIE_NAME].value
    stack = RedisStack(str(settings.LORASITE_MODELS_DIR), DATABASE_POOL_SIZE="4", DATABASE_POOL_TIMEOUT="3",
                       DATABASE_URL=f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}")
    try:
        port = stack.start_web()
        # A request that hangs past 15 s fails the test: a load balancer's probe would give up too.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/api/datasets").status_code == 200

            proxy.cut()
            health = http.get("/healthz")
            assert health.status_code == 503
            assert health.json()["checks"]["database"]["ok"] is False
            assert "unreachable" in health.json()["checks"]["database"]["detail"]
            for _ in range(3):  # every pooled connection is dead now: each request must still answer
                answer = http.get("/api/datasets")
                assert answer.status_code == 503, answer.text
                assert answer.json() == {"detail": "The database is not answering; try again in a moment."}
                assert int(answer.headers["Retry-After"]) > 0
            page = http.get(f"/teams/{team_a.slug}/", headers={"Authorization": ""},
                            cookies={django_settings.SESSION_COOKIE_NAME: session})
            assert page.status_code == 503 and "try again in a moment" in page.text
            assert "Traceback" not in page.text and "psycopg" not in page.text

            proxy.restore()
            assert wait_until(lambda: http.get("/healthz").status_code == 200), "no recovery within 30 s"
            assert http.get(f"/teams/{team_a.slug}/", headers={"Authorization": ""},
                            cookies={django_settings.SESSION_COOKIE_NAME: session}).status_code == 200
            # No dead connection is left in the pool to fail a later request.
            assert [http.get("/api/datasets").status_code for _ in range(8)] == [200] * 8
    finally:
        stack.close()
        proxy.close()


def test_a_redis_outage_keeps_submitted_jobs_and_they_run_when_redis_is_back(settings, member, dataset_a,
                                                                            tiny_base_model):
    """Redis is the broker and the channel layer. While it is gone /healthz says so, a submit still
    stores its job (201: nothing a user sent is lost), and once Redis answers again the reconciler
    sends the job and the worker that was waiting all along trains it, once."""
    from urllib.parse import urlsplit

    from tests.services import require_redis
    from training_app.models import JobStatus, TrainingJob

    redis = urlsplit(require_redis())
    proxy = CuttableProxy(redis.hostname, redis.port or 6379)
    token = ApiToken.issue(member, "faults")[1]
    stack = RedisStack(str(settings.LORASITE_MODELS_DIR))
    stack.env["REDIS_URL"] = f"redis://127.0.0.1:{proxy.port}{redis.path or '/0'}"  # its processes go through
    try:
        port = stack.start_web()
        stack.start_worker("gpu", "default")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            assert wait_until(lambda: http.get("/healthz").status_code == 200)

            proxy.cut()
            health = http.get("/healthz").json()
            assert health["status"] == "degraded"
            assert not health["checks"]["broker"]["ok"] and not health["checks"]["channel_layer"]["ok"]
            submitted = http.post("/api/jobs", json={"dataset_id": str(dataset_a.uuid), "base_model": "tiny-sd15",
                                                     "config": {"resolution": 64, "batch_size": 2, "rank": 4,
                                                                "max_steps": 2}})
            assert submitted.status_code == 201, submitted.text
            job_id = submitted.json()["id"]
            assert TrainingJob.objects.get(uuid=job_id).status == JobStatus.QUEUED

            proxy.restore()
            assert wait_until(lambda: TrainingJob.objects.get(uuid=job_id).status == JobStatus.COMPLETED, 120), \
                TrainingJob.objects.get(uuid=job_id).status
            assert TrainingJob.objects.get(uuid=job_id).attempts == 1
            assert wait_until(lambda: http.get("/healthz").status_code == 200)
    finally:
        stack.close()
        proxy.close()
