"""Team webhooks: when a job ends we POST its outcome, signed so the receiver can trust it.

Signature header: `X-Lorasite-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with
the webhook's secret (the scheme Stripe uses: the timestamp in the MAC stops replays).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.utils import timezone

from lorasite.accounts.access import looks_like_uuid
from lorasite.broker import get_broker
from lorasite.errors import InvalidInput, NotFound
from training_app.models import FINISHED_STATUSES, TeamWebhook, TrainingJob

MAX_WEBHOOKS_PER_TEAM = 10


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance: int = 300, now: float | None = None) -> bool:
    """What a receiver does: recompute the MAC and check the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


def validate_url(url: str) -> str:
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInput("The webhook URL must start with http:// or https:// and name a host.",
                           [{"loc": ["url"], "msg": "http(s) URL required"}])
    if parts.username or parts.password:
        raise InvalidInput("Put no credentials in the webhook URL; verify our signature instead.",
                           [{"loc": ["url"], "msg": "no credentials in the URL"}])
    if len(url) > 500:
        raise InvalidInput("The webhook URL is too long (500 characters at most).")
    return url


def _address_allowed(host: str) -> bool:
    """Refuse loopback, private and link-local targets unless the operator allows them, so a team
    cannot make the server probe its own network."""
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local or address.is_reserved:
            return False
    return True


def create_webhook(team, url: str, user) -> tuple[TeamWebhook, str]:
    url = validate_url(url)
    if TeamWebhook.objects.filter(team=team).count() >= MAX_WEBHOOKS_PER_TEAM:
        raise InvalidInput(f"A team can have at most {MAX_WEBHOOKS_PER_TEAM} webhooks.")
    secret = "whsec_" + secrets.token_urlsafe(32)
    return TeamWebhook.objects.create(team=team, url=url, secret=secret, created_by=user), secret


def delete_webhook(team, webhook_id: str) -> None:
    deleted, _ = TeamWebhook.objects.filter(team=team, uuid=webhook_id).delete() if looks_like_uuid(webhook_id) else (0, {})
    if not deleted:
        raise NotFound("No such webhook.")


def team_webhooks(team) -> list[TeamWebhook]:
    return list(TeamWebhook.objects.filter(team=team))


def job_event(job: TrainingJob) -> dict:
    return {
        "event": "job.finished",
        "job": {"id": str(job.uuid), "name": job.name, "team": job.team.slug, "status": job.status,
                "error": job.error or None, "step": job.step, "total_steps": job.total_steps,
                "final_loss": job.loss, "finished_at": job.finished_at.isoformat() if job.finished_at else None,
                "weights": {"kohya": f"/api/jobs/{job.uuid}/weights?layout=kohya",
                            "diffusers": f"/api/jobs/{job.uuid}/weights?layout=diffusers"}},
    }


def on_job_changed(job: TrainingJob, previous: str) -> None:
    """Listener of the job-changed event (after commit): queue deliveries when a job ends."""
    if job.status in FINISHED_STATUSES and TeamWebhook.objects.filter(team_id=job.team_id, enabled=True).exists():
        get_broker().get_actor("deliver_job_webhooks").send(str(job.uuid))


def deliver(job_uuid: str) -> None:
    job = TrainingJob.objects.select_related("team").filter(uuid=job_uuid).first()
    if job is None:
        return
    body = json.dumps(job_event(job), sort_keys=True).encode()
    failures = []
    for hook in TeamWebhook.objects.filter(team=job.team, enabled=True):
        host = urlsplit(hook.url).hostname or ""
        if not _address_allowed(host):
            status = "refused: the address is private or does not resolve"
        else:
            headers = {"Content-Type": "application/json", "User-Agent": "lorasite-webhook/1",
                       "X-Lorasite-Event": "job.finished", "X-Lorasite-Signature": sign(hook.secret, body, int(time.time()))}
            try:
                response = httpx.post(hook.url, content=body, headers=headers, timeout=10, follow_redirects=False)
                status = f"HTTP {response.status_code}"
                if response.status_code >= 500:
                    failures.append(hook.url)
            except httpx.HTTPError as exc:
                status = f"failed: {type(exc).__name__}"
                failures.append(hook.url)
        TeamWebhook.objects.filter(pk=hook.pk).update(last_delivery_at=timezone.now(), last_status=status[:200])
    if failures:
        # Dramatiq retries the actor with backoff; receivers should treat deliveries as at-least-once.
        raise RuntimeError(f"{len(failures)} webhook deliveries failed")

