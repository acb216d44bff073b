"""The portal's end of Replicate's webhooks: check a delivery, drop repeats, hand the training to its job.

`POST /api/webhooks/replicate/<backend config uuid>` (training_app/api.py) calls `receive`. A
delivery must be signed with the account's signing secret (fetched with the backend's token and
cached) and recent; a webhook-id seen before is acknowledged and dropped. The training JSON is kept
on the job's ReplicateTraining row, where the worker following the job reads it. The answer never
says anything about jobs: an outsider learns only that the delivery was refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timedelta
from uuid import UUID

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from lorasite.errors import DomainError, InvalidInput, NotFound
from training_app.backends import replicate_state as state
from training_app.backends.base import BackendError
from training_app.backends.replicate import ReplicateBackend
from training_app.backends.replicate_api import ReplicateError
from training_app.backends.replicate_webhooks import WebhookError, verify_webhook
from training_app.models import BackendConfig, BackendType, WebhookReceipt

SECRET_CACHE_SECONDS = 3600
# A delivery that does not verify re-reads the secret (it may have been rotated), at most this often.
REFETCH_AFTER_SECONDS = 300
RECEIPTS_KEPT = timedelta(days=7)  # Replicate stops retrying a delivery long before this
MAX_BODY_BYTES = 4 * 1024 * 1024  # a training's JSON with a long log is well under this


class WebhookRefused(DomainError):
    status = 401


class WebhookUnavailable(DomainError):
    """The signing secret cannot be fetched now: 503, so Replicate delivers again later."""

    status = 503


def receive(config_uuid: UUID, headers: Mapping[str, str], body: bytes) -> str:
    """'stored', 'duplicate' or 'ignored' (a training no job of this backend runs)."""
    config = BackendConfig.objects.filter(uuid=config_uuid, type=BackendType.REPLICATE, enabled=True).first()
    if config is None:
        raise NotFound()
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInput("The webhook body is too large.")
    backend = ReplicateBackend(config)
    webhook_id = _verified(backend, headers, body)
    try:
        payload = json.loads(body)
    except ValueError:
        raise InvalidInput("The webhook body is not JSON.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        raise InvalidInput("The webhook body is not a training.")
    with transaction.atomic():
        try:
            with transaction.atomic():
                WebhookReceipt.objects.create(backend_config=config, webhook_id=webhook_id[:200])
        except IntegrityError:
            return "duplicate"
        # One transaction: if storing fails, the receipt goes too and Replicate's retry is handled.
        stored = state.store_delivery(config.pk, payload)
    return "stored" if stored else "ignored"


def _verified(backend: ReplicateBackend, headers: Mapping[str, str], body: bytes) -> str:
    secret, fetched_at = _secret(backend)
    tolerance = backend.options.webhook_tolerance_seconds
    try:
        return verify_webhook(headers, body, secret, tolerance)
    except WebhookError:
        if time.time() - fetched_at < REFETCH_AFTER_SECONDS:
            raise _refused() from None
    secret, _ = _secret(backend, refresh=True)
    try:
        return verify_webhook(headers, body, secret, tolerance)
    except WebhookError:
        raise _refused() from None


def _refused() -> WebhookRefused:
    return WebhookRefused("The delivery is not signed by this backend's Replicate account, or is too old.")


def _secret(backend: ReplicateBackend, refresh: bool = False) -> tuple[str, float]:
    key = f"replicate-webhook-secret:{backend.config.uuid}"
    cached = None if refresh else cache.get(key)
    if cached:
        return cached
    try:
        with backend.client(retries=1, timeout=min(10.0, backend.config.request_timeout_seconds)) as api:
            value = (api.webhook_secret(), time.time())
    except (ReplicateError, BackendError):
        raise WebhookUnavailable("The portal cannot check this delivery right now; deliver it again later.") from None
    cache.set(key, value, SECRET_CACHE_SECONDS)
    return value


def prune_receipts() -> int:
    """Forget deliveries older than any retry of them (a maintenance hook)."""
    deleted, _ = WebhookReceipt.objects.filter(received_at__lt=timezone.now() - RECEIPTS_KEPT).delete()
    return deleted
