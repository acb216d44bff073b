"""A loopback Replicate API for tests: real HTTP on 127.0.0.1, the documented shapes, switchable failures.

Two servers, like the real service: the API (`base_url`, bearer token required) and a delivery host
(`delivery_url`, no token, like replicate.delivery) that serves `output.weights`. Covers what a LoRA
training needs: account, hardware, files (multipart upload, get, download, list, delete), models
(get, create, versions), trainings on a trainer version (inputs checked against the trainer's schema),
get/list/cancel, the webhook signing secret, and signed webhook deliveries. Errors are RFC 7807
`application/problem+json` bodies as Replicate sends them. The official `replicate` client works
against it (`replicate.Client(api_token=fake.token, base_url=fake.base_url)`).

    with FakeReplicate() as fake:
        fake.plan_next(TrainingPlan(fail_at_step=5, error="boom"))
        fake.rate_limit(reset_s=1)                 # the next API request gets a 429
        fake.inject("POST", r"/v1/files", 500)     # the next upload gets a 500
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.replicate_http import Recorded, Reply, Rule, Server, ok, parse_multipart, problem
from tests.fakes.replicate_sim import (
    EVENTS,
    TERMINAL,
    Delivery,
    SimTraining,
    TrainingPlan,
    WebhookSender,
    iso,
    read_dataset,
)
from tests.fakes.replicate_trainers import TRAINERS, Trainer, validate_input

HARDWARE = {"cpu": "CPU", "gpu-t4": "Nvidia T4 GPU", "gpu-l40s": "Nvidia L40S GPU",
            "gpu-a100-large": "Nvidia A100 (80GB) GPU", "gpu-h100": "Nvidia H100 GPU"}
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
TRAINING_KEYS = {"input", "destination", "webhook", "webhook_completed", "webhook_events_filter"}


class FakeReplicate:
    """The fake service; start() it (or use it as a context manager) and point a client at base_url."""

    def __init__(self, *, token: str = "r8_fake_token_for_tests_only", username: str = "acme",
                 organizations: tuple[str, ...] = ("acme-labs",), plan: TrainingPlan | None = None,
                 webhook_mode: str = "signed", webhook_min_interval_s: float = 0.05, page_size: int = 100,
                 max_file_bytes: int = 100 * 1024 * 1024, tick_s: float = 0.005):
        self.token, self.username, self.organizations = token, username, organizations
        self.default_plan = plan or TrainingPlan()
        self.webhook_min_interval_s, self.page_size = webhook_min_interval_s, page_size
        self.max_file_bytes, self.tick_s = max_file_bytes, tick_s
        self.corrupt_uploads = 0  # this many next uploads arrive with one byte flipped (a broken proxy)
        self.page_link_base: str | None = None  # when set, `next` links point there instead of base_url
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.sender = WebhookSender(self.webhook_secret, webhook_mode)
        self.requests: list[Recorded] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.trainings: dict[str, SimTraining] = {}
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self.hosted: dict[str, bytes] = {}
        self._plans: deque[TrainingPlan] = deque()
        self._rules: list[Rule] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._servers: list[Server] = []
        self._threads: list[threading.Thread] = []
        for trainer in TRAINERS:
            self.models[(trainer.owner, trainer.name)] = self._model_json(
                trainer.owner, trainer.name, "public", f"Trains LoRAs ({trainer.name})", trainer)

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> FakeReplicate:
        for role in ("api", "delivery"):
            server = Server(self, role)
            self._servers.append(server)
            self._spawn(lambda server=server: server.serve_forever(poll_interval=0.02), f"fake-replicate-{role}")
        self._spawn(self._tick, "fake-replicate-clock")
        return self

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self.sender.close()

    def __enter__(self) -> FakeReplicate:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def delivery_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    # -- switches for tests -------------------------------------------------------------------------
    def inject(self, method: str | None, path: str, status: int | None, *, times: int = 1,
               detail: str | None = None, headers: dict[str, str] | None = None, delay_s: float = 0.0) -> None:
        """The next `times` matching API requests get `status` (None: just `delay_s`, then served)."""
        with self._lock:
            self._rules.append(Rule(method, re.compile(path), status, times, detail, headers, delay_s))

    def rate_limit(self, reset_s: int = 1, *, times: int = 1, method: str | None = None, path: str = r"/v1/") -> None:
        """The next `times` matching requests are throttled, saying when the limit resets."""
        self.inject(method, path, 429, times=times,
                    detail=f"Request was throttled. Your rate limit resets in ~{reset_s}s.",
                    headers={"Retry-After": str(reset_s), "ratelimit-remaining": "0",
                             "ratelimit-reset": str(reset_s)})

    def plan_next(self, plan: TrainingPlan) -> None:
        """The next training created follows `plan` (later ones the default plan)."""
        with self._lock:
            self._plans.append(plan)

    def release(self, training_id: str) -> None:
        """Let a training paused by its plan's `pause_at_step` run on."""
        with self._lock:
            self.trainings[training_id].released = True

    def host(self, name: str, payload: bytes) -> str:
        """Serve `payload` from the delivery host; returns its URL (for crafted archives)."""
        with self._lock:
            self.hosted[name] = payload
        return f"{self.delivery_url}/hosted/{name}"

    def wait_for(self, training_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 10.0) -> SimTraining:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            training = self.trainings.get(training_id)
            if training is not None and training.status in statuses:
                return training
            time.sleep(0.005)
        raise TimeoutError(f"training {training_id} never reached {statuses}")

    @property
    def deliveries(self) -> list[Delivery]:
        return list(self.sender.deliveries)

    # -- the clock ----------------------------------------------------------------------------------
    def _tick(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                for training in list(self.trainings.values()):
                    if training.status not in TERMINAL:
                        for event in training.advance(time.monotonic(), self.delivery_url):
                            self._webhook(training, event)

    def _webhook(self, training: SimTraining, event: str) -> None:
        if not training.webhook or event not in training.events:
            return
        now = time.monotonic()
        if event == "logs" and now - training.last_logs_webhook < self.webhook_min_interval_s:
            return  # Replicate sends logs/output events at most this often; start/completed always
        if event == "logs":
            training.last_logs_webhook = now
        self.sender.send(training.webhook, event, training.id, json.dumps(training.to_json(self.base_url)).encode())

    # -- HTTP ---------------------------------------------------------------------------------------
    def dispatch(self, role: str, method: str, target: str, headers: Any, body: bytes) -> Reply:
        parts = urlsplit(target)
        with self._lock:
            self.requests.append(Recorded(role, method, parts.path, {k.lower(): v for k, v in headers.items()}))
        if role == "delivery":
            return self._deliver(parts.path)
        reply = self._injected(method, parts.path)
        if reply is not None:
            return reply
        if headers.get("authorization") != f"Bearer {self.token}":
            return problem(401, "You did not pass a valid authentication token", "Unauthenticated")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        for route_method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, parts.path)
            if match and route_method == method:
                with self._lock:
                    reply = handler(*match.groups(), body=body, headers=headers, query=query)
                reply.headers = {"ratelimit-remaining": "2999", "ratelimit-reset": "1", **(reply.headers or {})}
                return reply
        return problem(404, "Not found.")

    def _injected(self, method: str, path: str) -> Reply | None:
        with self._lock:
            rule = next((r for r in self._rules if (r.method in (None, method)) and r.path.search(path)), None)
            if rule is None:
                return None
            rule.times -= 1
            if rule.times <= 0:
                self._rules.remove(rule)
        if rule.delay_s:
            time.sleep(rule.delay_s)
        if rule.status is None:
            return None
        reply = problem(rule.status, rule.detail or f"Injected failure ({rule.status})")
        reply.headers = rule.headers
        return reply

    def _deliver(self, path: str) -> Reply:
        with self._lock:
            if path.startswith("/hosted/") and path[8:] in self.hosted:
                return Reply(200, self.hosted[path[8:]], "application/octet-stream")
            match = re.fullmatch(r"/([a-z0-9]+)/trained_model\.tar", path)
            training = self.trainings.get(match.group(1)) if match else None
            if training is None or training.weights is None:
                return Reply(404, b"Not Found", "text/plain")
            return Reply(200, training.weights, "application/x-tar")

    def _routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", r"/v1/account", self._account),
            ("GET", r"/v1/hardware", self._hardware),
            ("GET", r"/v1/webhooks/default/secret", self._secret),
            ("POST", r"/v1/files", self._create_file),
            ("GET", r"/v1/files", self._list_files),
            ("GET", r"/v1/files/([^/]+)", self._get_file),
            ("GET", r"/v1/files/([^/]+)/download", self._download_file),
            ("DELETE", r"/v1/files/([^/]+)", self._delete_file),
            ("GET", r"/v1/models", self._list_models),
            ("POST", r"/v1/models", self._create_model),
            ("GET", r"/v1/models/([^/]+)/([^/]+)", self._get_model),
            ("GET", r"/v1/models/([^/]+)/([^/]+)/versions/([^/]+)", self._get_version),
            ("POST", r"/v1/models/([^/]+)/([^/]+)/versions/([^/]+)/trainings", self._create_training),
            ("GET", r"/v1/trainings", self._list_trainings),
            ("GET", r"/v1/trainings/([^/]+)", self._get_training),
            ("POST", r"/v1/trainings/([^/]+)/cancel", self._cancel_training),
        ]

    # -- account, hardware, secret --------------------------------------------------------------------
    def _account(self, **_: Any) -> Reply:
        return ok({"type": "user", "username": self.username, "name": self.username.title(),
                   "github_url": None, "avatar_url": None})

    def _hardware(self, **_: Any) -> Reply:
        return ok([{"sku": sku, "name": name} for sku, name in HARDWARE.items()])

    def _secret(self, **_: Any) -> Reply:
        return ok({"key": self.webhook_secret})

    # -- files ----------------------------------------------------------------------------------------
    def _create_file(self, *, body: bytes, headers: Any, **_: Any) -> Reply:
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return problem(400, "Expected a multipart/form-data body with a 'content' file")
        if len(body) > self.max_file_bytes:
            return problem(413, f"File is larger than the {self.max_file_bytes} byte limit")
        fields = parse_multipart(content_type, body)
        if "content" not in fields:
            return problem(422, "content is required", "Input validation failed",
                           invalid_fields=[{"type": "required", "field": "content",
                                            "description": "content is required"}])
        filename, part_type, payload = fields["content"]
        if self.corrupt_uploads > 0 and payload:
            self.corrupt_uploads -= 1
            payload = payload[:-1] + bytes([payload[-1] ^ 0x01])
        metadata = json.loads(fields["metadata"][2]) if "metadata" in fields else {}
        file_id = secrets.token_hex(12)
        now = time.time()
        md5 = hashlib.md5(payload).hexdigest()  # Replicate's etag and second checksum
        record = {"id": file_id, "name": filename or "file", "content_type": part_type or "application/octet-stream",
                  "size": len(payload), "etag": md5, "checksums": {"sha256": hashlib.sha256(payload).hexdigest(),
                                                                    "md5": md5},
                  "metadata": metadata, "created_at": iso(now), "expires_at": iso(now + 86400),
                  "urls": {"get": f"{self.base_url}/v1/files/{file_id}"}}
        self.files[file_id] = {"record": record, "payload": payload}
        return ok(record, 201)

    def _list_files(self, **_: Any) -> Reply:
        return ok({"next": None, "previous": None, "results": [f["record"] for f in self.files.values()]})

    def _get_file(self, file_id: str, **_: Any) -> Reply:
        return ok(self.files[file_id]["record"]) if file_id in self.files else problem(404, "Not found.")

    def _download_file(self, file_id: str, **_: Any) -> Reply:
        if file_id not in self.files:
            return problem(404, "Not found.")
        entry = self.files[file_id]
        return Reply(200, entry["payload"], entry["record"]["content_type"])

    def _delete_file(self, file_id: str, **_: Any) -> Reply:
        return Reply(204) if self.files.pop(file_id, None) else problem(404, "Not found.")

    # -- models ---------------------------------------------------------------------------------------
    def _model_json(self, owner: str, name: str, visibility: str, description: str | None,
                    trainer: Trainer | None = None) -> dict[str, Any]:
        latest = None
        if trainer is not None:
            latest = {"id": trainer.version, "created_at": "2024-08-14T15:30:00.000000Z", "cog_version": "0.9.13",
                      "openapi_schema": trainer.openapi_schema()}
        return {"url": f"https://replicate.com/{owner}/{name}", "owner": owner, "name": name,
                "description": description, "visibility": visibility, "github_url": None, "paper_url": None,
                "license_url": None, "run_count": 0, "cover_image_url": None, "default_example": None,
                "latest_version": latest}

    def _list_models(self, **_: Any) -> Reply:
        return ok({"next": None, "previous": None, "results": list(self.models.values())})

    def _create_model(self, *, body: bytes, **_: Any) -> Reply:
        data = json.loads(body or b"{}")
        invalid = [{"type": "required", "field": key, "description": f"{key} is required"}
                   for key in ("owner", "name", "visibility", "hardware") if key not in data]
        if "hardware" in data and data["hardware"] not in HARDWARE:
            invalid.append({"type": "enum", "field": "hardware",
                            "description": f"hardware must be one of: {', '.join(HARDWARE)}"})
        if "visibility" in data and data["visibility"] not in ("public", "private"):
            invalid.append({"type": "enum", "field": "visibility", "description": "must be public or private"})
        if "name" in data and not MODEL_NAME.match(str(data["name"])):
            invalid.append({"type": "pattern", "field": "name", "description":
                            "Model names may contain lowercase letters, digits, dashes, underscores and periods"})
        if invalid:
            return problem(422, "; ".join(item["description"] for item in invalid), "Invalid request",
                           invalid_fields=invalid)
        owner, name = data["owner"], data["name"]
        if owner not in (self.username, *self.organizations):
            return problem(404, f"The owner {owner!r} does not exist or you are not a member of it")
        if (owner, name) in self.models:
            return problem(409, "A model with that name and owner already exists.")
        model = self._model_json(owner, name, data["visibility"], data.get("description"))
        self.models[(owner, name)] = model
        return ok(model, 201)

    def _get_model(self, owner: str, name: str, **_: Any) -> Reply:
        model = self.models.get((owner, name))
        return ok(model) if model else problem(404, "Not found.")

    def _get_version(self, owner: str, name: str, version: str, **_: Any) -> Reply:
        model = self.models.get((owner, name))
        latest = (model or {}).get("latest_version")
        return ok(latest) if latest and latest["id"] == version else problem(404, "Not found.")

    # -- trainings ------------------------------------------------------------------------------------
    def _create_training(self, owner: str, name: str, version: str, *, body: bytes, **_: Any) -> Reply:
        trainer = next((t for t in TRAINERS if (t.owner, t.name, t.version) == (owner, name, version)), None)
        if trainer is None:
            return problem(404, "The requested version does not exist or you do not have access to it")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return problem(400, "Request body is not valid JSON")
        extra = sorted(set(data) - TRAINING_KEYS)
        if extra:
            return problem(422, f"Additional property {extra[0]} is not allowed", "Invalid request",
                           invalid_fields=[{"type": "additional_property_not_allowed", "field": "",
                                            "description": f"Additional property {key} is not allowed"}
                                           for key in extra])
        destination = str(data.get("destination", ""))
        owner_name = tuple(destination.split("/", 1)) if destination.count("/") == 1 else None
        if owner_name not in self.models or owner_name[0] not in (self.username, *self.organizations):
            return problem(404, "The specified training destination does not exist")
        invalid = validate_input(trainer, data.get("input"))
        events = data.get("webhook_events_filter") or list(EVENTS)
        webhook = data.get("webhook")
        if webhook is not None and not re.match(r"^https?://", str(webhook)):
            invalid.append({"type": "format", "field": "webhook", "description": "Must be a valid URL"})
        if not set(events) <= set(EVENTS):
            invalid.append({"type": "enum", "field": "webhook_events_filter",
                            "description": f"Events must be among {', '.join(EVENTS)}"})
        if invalid:
            lines = "".join(f"- {item['field']}: {item['description']}\n" for item in invalid)
            return problem(422, lines, "Input validation failed", invalid_fields=invalid)
        plan = self._plans.popleft() if self._plans else self.default_plan
        training_id = base64.b32encode(secrets.token_bytes(17)).decode().lower()[:26]
        training = SimTraining(id=training_id, trainer=trainer, destination=destination,
                               input=data["input"], plan=plan, webhook=webhook, events=tuple(events),
                               dataset=read_dataset(self._input_payload(data["input"]["input_images"])))
        self.trainings[training.id] = training
        self._webhook(training, "start")
        return ok(training.to_json(self.base_url), 201)

    def _input_payload(self, url: str) -> bytes | None:
        match = re.fullmatch(re.escape(self.base_url) + r"/v1/files/([^/]+)", url)
        if match and match.group(1) in self.files:
            return self.files[match.group(1)]["payload"]
        if url.startswith("data:") and ";base64," in url:
            return base64.b64decode(url.split(";base64,", 1)[1])
        return None

    def _list_trainings(self, *, query: dict[str, str], **_: Any) -> Reply:
        ordered = sorted(self.trainings.values(), key=lambda t: t.created, reverse=True)
        offset = int(query.get("cursor", "0"))
        page = ordered[offset:offset + self.page_size]
        more = offset + self.page_size < len(ordered)
        link_base = self.page_link_base or self.base_url
        return ok({"next": f"{link_base}/v1/trainings?cursor={offset + self.page_size}" if more else None,
                   "previous": None, "results": [t.to_json(self.base_url) for t in page]})

    def _get_training(self, training_id: str, **_: Any) -> Reply:
        training = self.trainings.get(training_id)
        return ok(training.to_json(self.base_url)) if training else problem(404, "Not found.")

    def _cancel_training(self, training_id: str, **_: Any) -> Reply:
        training = self.trainings.get(training_id)
        if training is None:
            return problem(404, "Not found.")
        if training.cancel():
            self._webhook(training, "completed")
        return ok(training.to_json(self.base_url))


def main() -> None:
    """Serve the fake from its own process (`python -m tests.fakes.replicate_server`) until stdin closes:
    prints one JSON line with base_url, delivery_url, token and webhook_secret, for benchmarks and
    tests that want the server off their own interpreter (its GIL, its threads)."""
    import sys

    with FakeReplicate() as fake:
        print(json.dumps({"base_url": fake.base_url, "delivery_url": fake.delivery_url, "token": fake.token,
                          "webhook_secret": fake.webhook_secret}), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
