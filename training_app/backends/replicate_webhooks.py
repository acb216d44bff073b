"""Checking Replicate's webhook deliveries: signature, age, and the id that makes a duplicate recognisable.

Replicate signs like Standard Webhooks: `webhook-signature` holds `v1,<base64 HMAC-SHA256>` entries over
`"{webhook-id}.{webhook-timestamp}.{raw body}"`, keyed with the base64 part of the account's `whsec_`
secret. Deliveries are retried, so the same `webhook-id` can arrive twice: the caller keeps the ids it
has handled. No Django: the view passes the headers and the raw body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from training_app.backends.replicate_api import ReplicateError


class WebhookError(ReplicateError):
    """A webhook delivery that must not be trusted (unsigned, stale, wrongly signed)."""


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str, tolerance_s: float = 300,
                   now: float | None = None) -> str:
    """Check a delivery's signature and age; return its webhook-id (the key for dropping duplicates).

    Replicate signs `"{webhook-id}.{webhook-timestamp}.{body}"` with HMAC-SHA256 under the base64 key
    after `whsec_`; `webhook-signature` lists one or more `v1,<base64>` entries (several during a
    key rotation). Raises WebhookError for a missing header, a stale or future timestamp, or no match.
    """
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    webhook_id, timestamp, signatures = (lowered.get(name, "").strip() for name in
                                         ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (webhook_id and timestamp and signatures):
        raise WebhookError("The webhook is not signed (webhook-id, webhook-timestamp and webhook-signature "
                           "are required).")
    if not re.fullmatch(r"\d{1,12}", timestamp):
        raise WebhookError("The webhook timestamp is not a Unix time.")
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance_s:
        raise WebhookError(f"The webhook timestamp is more than {tolerance_s:.0f} s away from now (a replay?).")
    if not secret.startswith("whsec_"):
        raise WebhookError("The webhook signing secret is not a whsec_ key.")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error as exc:
        raise WebhookError("The webhook signing secret is not valid base64.") from exc
    payload = body.encode() if isinstance(body, str) else bytes(body)
    expected = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + payload, hashlib.sha256).digest()
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(candidate, expected):
            return webhook_id
    raise WebhookError("The webhook signature does not match (wrong secret, or the body was changed).")
