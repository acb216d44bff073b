"""Replicate webhook verification: the published test vector, hostile variations, and real deliveries
from the loopback fake to a loopback receiver (signed, unsigned, stale, duplicated, wrongly signed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.replicate_sim import TrainingPlan
from tests.fakes.replicate_trainers import FLUX_TRAINER
from training_app.backends.replicate_api import ReplicateClient, Training
from training_app.backends.replicate_webhooks import WebhookError, verify_webhook

# From replicate-python's tests (recomputed in the shared protocol notes).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_HEADERS = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                  "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_NOW = 1614265330


def signed(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}


def test_published_test_vector_verifies_and_returns_the_webhook_id():
    assert verify_webhook(VECTOR_HEADERS, VECTOR_BODY, VECTOR_SECRET, now=VECTOR_NOW) == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def test_headers_are_matched_whatever_their_case_and_a_str_body_works():
    headers = {key.title(): value for key, value in VECTOR_HEADERS.items()}
    assert verify_webhook(headers, VECTOR_BODY.decode(), VECTOR_SECRET, now=VECTOR_NOW)


def test_one_matching_signature_among_several_is_enough():
    good = VECTOR_HEADERS["webhook-signature"]
    for listed in (f"v1,AAAA {good}", f"v1,not-base64!! {good}", f"v2,xyz {good}"):
        assert verify_webhook({**VECTOR_HEADERS, "webhook-signature": listed}, VECTOR_BODY, VECTOR_SECRET,
                              now=VECTOR_NOW)


def test_a_valid_signature_under_another_scheme_version_is_not_accepted():
    encoded = VECTOR_HEADERS["webhook-signature"].split(",", 1)[1]
    with pytest.raises(WebhookError, match="does not match"):
        verify_webhook({**VECTOR_HEADERS, "webhook-signature": f"v1a,{encoded}"}, VECTOR_BODY, VECTOR_SECRET,
                       now=VECTOR_NOW)


@pytest.mark.parametrize("change", ["body", "id", "timestamp", "secret"])
def test_a_tampered_delivery_is_rejected(change):
    headers, body, secret = dict(VECTOR_HEADERS), VECTOR_BODY, VECTOR_SECRET
    if change == "body":
        body = b'{"test": 2432232315}'
    elif change == "id":
        headers["webhook-id"] = "msg_someone_else"
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(VECTOR_NOW + 1)
    else:
        secret = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
    with pytest.raises(WebhookError, match="does not match"):
        verify_webhook(headers, body, secret, now=VECTOR_NOW)


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_a_delivery_outside_the_tolerance_is_rejected_as_stale(offset):
    with pytest.raises(WebhookError, match="away from now"):
        verify_webhook(VECTOR_HEADERS, VECTOR_BODY, VECTOR_SECRET, tolerance_s=300, now=VECTOR_NOW + offset)


def test_a_delivery_inside_the_tolerance_is_accepted():
    assert verify_webhook(VECTOR_HEADERS, VECTOR_BODY, VECTOR_SECRET, tolerance_s=300, now=VECTOR_NOW + 299)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_an_unsigned_delivery_is_rejected(missing):
    headers = {key: value for key, value in VECTOR_HEADERS.items() if key != missing}
    with pytest.raises(WebhookError, match="not signed"):
        verify_webhook(headers, VECTOR_BODY, VECTOR_SECRET, now=VECTOR_NOW)


@pytest.mark.parametrize(("timestamp", "secret", "message"), [
    ("yesterday", VECTOR_SECRET, "not a Unix time"),
    ("1614265330", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not a whsec_ key"),
    ("1614265330", "whsec_***", "not valid base64"),
])
def test_a_malformed_timestamp_or_secret_is_a_clear_error(timestamp, secret, message):
    with pytest.raises(WebhookError, match=message) as caught:
        verify_webhook({**VECTOR_HEADERS, "webhook-timestamp": timestamp}, VECTOR_BODY, secret, now=VECTOR_NOW)
    assert secret not in caught.value.message


@given(body=st.binary(max_size=512), webhook_id=st.text("abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1,
                                                         max_size=40), flip=st.integers(0, 511))
def test_any_signed_body_verifies_and_any_changed_byte_does_not(body, webhook_id, flip):
    headers = signed(VECTOR_SECRET, webhook_id, VECTOR_NOW, body)
    assert verify_webhook(headers, body, VECTOR_SECRET, now=VECTOR_NOW) == webhook_id
    if body:
        changed = bytearray(body)
        changed[flip % len(body)] ^= 0x01
        with pytest.raises(WebhookError):
            verify_webhook(headers, bytes(changed), VECTOR_SECRET, now=VECTOR_NOW)


# -- real deliveries from the fake -----------------------------------------------------------------------
class Receiver:
    """A loopback webhook endpoint that keeps what it was sent and answers 200."""

    def __init__(self):
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/replicate/job-1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def run_training_with_webhook(mode: str, receiver: Receiver, images_dir) -> FakeReplicate:
    from PIL import Image

    path = images_dir / "a.png"
    Image.new("RGB", (16, 16), (9, 9, 9)).save(path)
    fake = FakeReplicate(webhook_mode=mode, plan=TrainingPlan(seconds_per_step=0.01), webhook_min_interval_s=0.03)
    fake.start()
    try:
        with ReplicateClient(fake.base_url, fake.token) as api:
            upload = api.upload_dataset([(path, "TOK")])
            api.ensure_model("acme", "hooked")
            training = api.create_training(FLUX_TRAINER.ref, "acme/hooked", {"input_images": upload.url, "steps": 10},
                                           webhook_url=receiver.url)
            fake.wait_for(training.id)
            fake.sender.drain()
    finally:
        fake.stop()
    return fake


def test_signed_deliveries_verify_and_end_with_the_finished_training(receiver, tmp_path):
    fake = run_training_with_webhook("signed", receiver, tmp_path)
    assert receiver.received and all(d.status_code == 200 for d in fake.deliveries)
    ids = [verify_webhook(headers, body, fake.webhook_secret) for headers, body in receiver.received]
    assert len(set(ids)) == len(ids)
    events = [d.event for d in fake.deliveries]
    assert events[0] == "start" and events[-1] == "completed" and "logs" in events and "output" not in events
    final = Training.from_json(fake.deliveries[-1].payload)
    assert final.status == "succeeded" and final.weights_url


@pytest.mark.parametrize(("mode", "message"), [("unsigned", "not signed"), ("stale", "away from now"),
                                               ("wrong_secret", "does not match")])
def test_deliveries_that_must_not_be_trusted_are_all_rejected(receiver, tmp_path, mode, message):
    fake = run_training_with_webhook(mode, receiver, tmp_path)
    assert receiver.received
    for headers, body in receiver.received:
        with pytest.raises(WebhookError, match=message):
            verify_webhook(headers, body, fake.webhook_secret)


def test_a_duplicated_delivery_carries_the_same_id_so_it_is_handled_once(receiver, tmp_path):
    fake = run_training_with_webhook("duplicated", receiver, tmp_path)
    ids = [verify_webhook(headers, body, fake.webhook_secret) for headers, body in receiver.received]
    assert ids[0::2] == ids[1::2] and len(set(ids)) == len(ids) // 2
    handled: dict[str, str] = {}
    for (_, body), webhook_id in zip(receiver.received, ids, strict=True):
        handled.setdefault(webhook_id, Training.from_json(json.loads(body)).status)
    assert len(handled) == len(fake.deliveries) // 2 and list(handled.values())[-1] == "succeeded"


def test_logs_deliveries_are_throttled_but_start_and_completed_always_arrive(receiver, tmp_path):
    fake = run_training_with_webhook("signed", receiver, tmp_path)
    events = [d.event for d in fake.deliveries]
    assert events.count("start") == 1 and events.count("completed") == 1
    # ten steps 10 ms apart would each grow the logs; at most one logs event per 30 ms gets through
    assert 0 < events.count("logs") < 8
