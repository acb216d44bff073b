"""A small Replicate trainings client: the HTTP calls a LoRA training needs, with one typed error.

Built on httpx rather than the official `replicate` client (the tests prove both speak to the same
fake) because a worker needs things that client does not give: a timeout on every call (its file
upload has none), the 429 headers to honour the reset (its errors drop them), the 422 `invalid_fields`
(it keeps only `detail`), and no hidden retry loop that can sleep for minutes inside a job.

Every failure becomes `ReplicateError(message, retryable, retry_after)`: the message is for people,
never carries the token, and says what to do. Only calls that cannot start anything twice are
retried here (GETs, cancel, uploads, model creation); creating a training is never retried, and when
its outcome is unknown the error says so (`may_have_started`) so the caller looks for the training
(`find_training`) before it ever submits again: a paid training is never started twice.

No Django imports: the backend class passes in the base URL, the token (read from the environment
variable its config names) and the timeouts.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from training_app.backends.replicate_archives import (
    ArchiveError,
    ArchiveLimits,
    ExtractedWeights,
    extract_lora,
    zip_dataset,
)

DEFAULT_BASE_URL = "https://api.replicate.com"
TERMINAL_STATUSES = ("succeeded", "failed", "canceled")
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
TRAINER_REF = re.compile(r"^([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*):([0-9a-f]{64})$")
MODEL_REF = re.compile(r"^([A-Za-z0-9][\w.-]*)/([a-z0-9][a-z0-9._-]*)$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_RETRY_AFTER_S = 10.0


class ReplicateError(Exception):
    """A Replicate call failed. `message` is for people; `retryable` says whether trying again may help.

    `retry_after` (seconds) is the wait Replicate asked for (429) or None. `status` is the HTTP status
    (None for timeouts and transport errors); `field` names the input Replicate or our mapping refused;
    `may_have_started` is True when a create-training call failed in a way that leaves its outcome unknown;
    `detail` is Replicate's own text.
    """

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None, *,
                 status: int | None = None, field: str | None = None, may_have_started: bool = False,
                 detail: str = ""):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.field = field
        self.may_have_started = may_have_started
        self.detail = detail  # Replicate's own words (for logs and for telling 404s apart)


@dataclass(frozen=True)
class Timeouts:
    """Seconds for each phase of a request; uploads and weight downloads get longer reads and writes."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 10.0
    upload: float = 300.0  # write timeout while sending the dataset zip
    download: float = 120.0  # read timeout between chunks of the weights tar

    def default(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)

    def for_upload(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.upload, pool=self.pool)

    def for_download(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.download, write=self.write, pool=self.pool)


@dataclass(frozen=True)
class Account:
    username: str
    name: str
    type: str  # "user" or "organization"


@dataclass(frozen=True)
class UploadedFile:
    id: str
    url: str  # urls.get: what a trainer's input_images takes
    size: int
    sha256: str
    expires_at: str | None


@dataclass(frozen=True)
class Training:
    """A training as Replicate reports it (GET, create, cancel and webhook bodies share this shape)."""

    id: str
    status: str
    model: str = ""
    version: str = ""
    destination: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    logs: str = ""
    error: str | None = None
    weights_url: str | None = None
    output_version: str | None = None
    predict_time: float | None = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: Any) -> Training:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("status"), str):
            raise ReplicateError("Replicate answered with something that is not a training.", retryable=True)
        output = data.get("output") if isinstance(data.get("output"), dict) else {}
        metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        predict_time = metrics.get("predict_time")
        return cls(
            id=data["id"], status=data["status"], model=str(data.get("model") or ""),
            version=str(data.get("version") or ""), destination=data.get("destination"),
            input=data.get("input") if isinstance(data.get("input"), dict) else {},
            logs=data.get("logs") or "", error=data.get("error"),
            weights_url=output.get("weights"), output_version=output.get("version"),
            predict_time=float(predict_time) if isinstance(predict_time, int | float) else None,
            created_at=data.get("created_at"), started_at=data.get("started_at"),
            completed_at=data.get("completed_at"),
        )


def parse_retry_after(headers: Mapping[str, str], detail: str = "", now: float | None = None) -> float | None:
    """Seconds to wait from Retry-After (seconds or an HTTP date), ratelimit-reset, or the 429 text."""
    value = (headers.get("retry-after") or "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    if value:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - (now or time.time()))
        except (TypeError, ValueError):
            pass
    reset = (headers.get("ratelimit-reset") or "").strip()
    if re.fullmatch(r"\d+(\.\d+)?", reset):
        return float(reset)
    match = re.search(r"resets in ~?(\d+(?:\.\d+)?)\s*s", detail)
    return float(match.group(1)) if match else None


def error_from_response(response: httpx.Response, not_found: str | None = None) -> ReplicateError:
    """One ReplicateError for an HTTP error answer, with the words a person can act on."""
    error = _error_for_status(response, not_found)
    try:
        body = response.json()
    except ValueError:
        body = {}
    error.detail = str(body.get("detail") or "")[:500] if isinstance(body, dict) else ""
    return error


def _error_for_status(response: httpx.Response, not_found: str | None) -> ReplicateError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    detail = str(body.get("detail") or body.get("title") or response.reason_phrase or "")[:500].strip()
    if status == 401:
        return ReplicateError("Replicate refused the API token (HTTP 401): check the token in the environment "
                              "variable this backend names.", status=status)
    if status == 403:
        return ReplicateError(f"Replicate does not let this token do that (HTTP 403): {detail}", status=status)
    if status == 404:
        return ReplicateError(not_found or f"Replicate could not find it (HTTP 404): {detail}", status=status)
    if status == 422:
        fields = [item for item in body.get("invalid_fields") or [] if isinstance(item, dict)]
        if fields:
            first = str(fields[0].get("field") or "").removeprefix("input.") or None
            problems = "; ".join(f"{str(item.get('field') or '').removeprefix('input.') or 'request'}: "
                                 f"{item.get('description', '')}" for item in fields)
            return ReplicateError(f"Replicate refused the request (HTTP 422): {problems}", status=status, field=first)
        return ReplicateError(f"Replicate refused the request (HTTP 422): {detail}", status=status)
    if status == 429:
        wait = parse_retry_after(response.headers, detail)
        return ReplicateError(f"Replicate is rate-limiting this account (HTTP 429); retry in "
                              f"~{(wait if wait is not None else DEFAULT_RETRY_AFTER_S):.0f} s.",
                              retryable=True, retry_after=wait if wait is not None else DEFAULT_RETRY_AFTER_S,
                              status=status)
    if status >= 500:
        return ReplicateError(f"Replicate had a server error (HTTP {status}); it is worth retrying later.",
                              retryable=True, status=status)
    return ReplicateError(f"Replicate answered HTTP {status}: {detail}", status=status)


def parse_trainer(trainer: str) -> tuple[str, str, str]:
    """`owner/model:version` (a 64-hex version id) as its three parts."""
    match = TRAINER_REF.match(trainer or "")
    if not match:
        raise ReplicateError(f"The trainer must read owner/model:version (a 64-character version id), not "
                             f"{trainer!r}.", field="trainer")
    owner, model, version = match.groups()
    return owner, model, version


def _parse_model(ref: str, what: str) -> tuple[str, str]:
    match = MODEL_REF.match(ref or "")
    if not match:
        raise ReplicateError(f"The {what} must read owner/name (lowercase name), not {ref!r}.", field=what)
    return match.group(1), match.group(2)


class ReplicateClient:
    """The calls a LoRA training makes to Replicate; each has a timeout, failures are ReplicateError."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, token: str = "", timeouts: Timeouts | None = None, *,
                 retries: int = 2, max_retry_wait_s: float = 30.0, sleep: Callable[[float], None] = time.sleep):
        if not token:
            raise ReplicateError("No Replicate API token: set the environment variable this backend names.")
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        self.retries, self.max_retry_wait_s, self._sleep = retries, max_retry_wait_s, sleep
        agent = {"User-Agent": "lorasite-replicate/1"}
        self._api = httpx.Client(base_url=self.base_url, headers={**agent, "Authorization": f"Bearer {token}"},
                                 timeout=self.timeouts.default(), follow_redirects=False)
        # Weights live on another host (replicate.delivery): fetched without the token, redirects allowed.
        self._plain = httpx.Client(headers=agent, timeout=self.timeouts.for_download(), follow_redirects=True,
                                   max_redirects=5)

    def __repr__(self) -> str:  # never the token
        return f"ReplicateClient({self.base_url!r})"

    def close(self) -> None:
        self._api.close()
        self._plain.close()

    def __enter__(self) -> ReplicateClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one request path ---------------------------------------------------------------------
    def _request(self, method: str, path: str, *, retry_safe: bool, not_found: str | None = None,
                 **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._api.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error = ReplicateError(f"Could not reach Replicate at {self.base_url} ({type(exc).__name__}).",
                                       retryable=True)
            except httpx.TimeoutException as exc:
                error = ReplicateError(f"Replicate did not answer in time ({type(exc).__name__}).", retryable=True,
                                       may_have_started=not retry_safe)
            except httpx.TransportError as exc:
                error = ReplicateError(f"The connection to Replicate failed ({type(exc).__name__}).", retryable=True,
                                       may_have_started=not retry_safe)
            else:
                if response.status_code < 400:
                    return response
                error = error_from_response(response, not_found)
                error.may_have_started = not retry_safe and response.status_code >= 500
            wait = error.retry_after if error.retry_after is not None else min(8.0, 0.5 * 2**attempt)
            if not (retry_safe and error.retryable and attempt < self.retries and wait <= self.max_retry_wait_s):
                raise error
            self._sleep(wait)
            attempt += 1

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ReplicateError("Replicate answered with something that is not JSON.", retryable=True) from exc

    # -- account and models -------------------------------------------------------------------------
    def account(self) -> Account:
        """The token's account: a cheap check that the token works (GET /v1/account)."""
        data = self._json(self._request("GET", "/v1/account", retry_safe=True))
        return Account(str(data.get("username", "")), str(data.get("name", "")), str(data.get("type", "user")))

    def webhook_secret(self) -> str:
        """The account's webhook signing secret (`whsec_…`), for verify_webhook."""
        key = self._json(self._request("GET", "/v1/webhooks/default/secret", retry_safe=True)).get("key")
        if not isinstance(key, str) or not key.startswith("whsec_"):
            raise ReplicateError("Replicate gave no webhook signing secret for this account.", retryable=True)
        return key

    def latest_version(self, model: str) -> str:
        """The latest version id of `owner/name` (to pin a trainer when the config names none)."""
        owner, name = _parse_model(model, "trainer")
        data = self._json(self._request("GET", f"/v1/models/{owner}/{name}", retry_safe=True,
                                        not_found=f"Replicate has no model {owner}/{name}."))
        version = (data.get("latest_version") or {}).get("id")
        if not version:
            raise ReplicateError(f"Replicate's model {owner}/{name} has no version yet.", field="trainer")
        return str(version)

    def ensure_model(self, owner: str, name: str, hardware: str = "cpu", visibility: str = "private",
                     description: str | None = None) -> bool:
        """Make sure the destination model exists; True when this call created it."""
        _parse_model(f"{owner}/{name}", "destination")
        try:
            self._request("GET", f"/v1/models/{owner}/{name}", retry_safe=True)
            return False
        except ReplicateError as exc:
            if exc.status != 404:
                raise
        body: dict[str, Any] = {"owner": owner, "name": name, "visibility": visibility, "hardware": hardware}
        if description:
            body["description"] = description
        try:
            self._request("POST", "/v1/models", json=body, retry_safe=True,
                          not_found=f"Replicate has no account or organisation {owner!r} this token can create "
                                    f"models in: fix the backend's destination owner.")
        except ReplicateError as exc:
            if exc.status == 409:  # created meanwhile by another worker: fine
                return False
            if exc.status == 404:
                exc.field = "destination"
            raise
        return True

    # -- files ----------------------------------------------------------------------------------------
    def upload_dataset(self, dataset: bytes | Path | Iterable[tuple[Path | str, str]], *, filename: str = "data.zip",
                       caption_csv: bool = False, max_bytes: int = 100 * 1024**2) -> UploadedFile:
        """Upload the dataset zip (bytes, a zip path, or (image path, caption) items zipped here)."""
        if isinstance(dataset, bytes | bytearray):
            return self._upload(bytes(dataset), filename)
        if isinstance(dataset, Path):
            return self._upload(dataset, filename)
        with tempfile.TemporaryDirectory(prefix="replicate-upload-") as folder:
            try:
                archive = zip_dataset(dataset, Path(folder) / filename, caption_csv=caption_csv, max_bytes=max_bytes)
            except ArchiveError as exc:
                raise ReplicateError(f"The dataset cannot be sent: {exc}") from exc
            return self._upload(archive.path, filename)

    def _upload(self, content: bytes | Path, filename: str) -> UploadedFile:
        digest = hashlib.sha256()
        if isinstance(content, Path):
            with content.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                    digest.update(chunk)
        else:
            digest.update(content)
        attempts = 0
        while True:
            handle = content.open("rb") if isinstance(content, Path) else content
            try:
                response = self._request("POST", "/v1/files", retry_safe=True, timeout=self.timeouts.for_upload(),
                                         files={"content": (filename, handle, "application/zip")})
            finally:
                if isinstance(content, Path):
                    handle.close()
            data = self._json(response)
            uploaded = UploadedFile(str(data.get("id", "")), str((data.get("urls") or {}).get("get", "")),
                                    int(data.get("size") or 0), str((data.get("checksums") or {}).get("sha256", "")),
                                    data.get("expires_at"))
            if not uploaded.url:
                raise ReplicateError("Replicate accepted the upload but gave no URL for it.", retryable=True)
            if not uploaded.sha256 or uploaded.sha256 == digest.hexdigest():
                return uploaded
            attempts += 1
            if attempts > self.retries:
                raise ReplicateError("The dataset arrived at Replicate corrupted (checksum mismatch).", retryable=True)

    # -- trainings ------------------------------------------------------------------------------------
    def create_training(self, trainer: str, destination: str, inputs: Mapping[str, Any],
                        webhook_url: str | None = None,
                        webhook_events: tuple[str, ...] = ("start", "logs", "completed")) -> Training:
        """Start a training of `trainer` (owner/model:version) into `destination` (owner/name). Never retried."""
        owner, model, version = parse_trainer(trainer)
        dest_owner, dest_name = _parse_model(destination, "destination")
        body: dict[str, Any] = {"destination": f"{dest_owner}/{dest_name}", "input": dict(inputs)}
        if webhook_url:
            body["webhook"] = webhook_url
            body["webhook_events_filter"] = [event for event in webhook_events if event in WEBHOOK_EVENTS]
        try:
            response = self._request("POST", f"/v1/models/{owner}/{model}/versions/{version}/trainings",
                                     json=body, retry_safe=False)
        except ReplicateError as exc:
            if exc.status == 404:
                destination_missing = "destination" in exc.detail.lower()
                exc.message = (f"Replicate has no destination model {destination} for this account: create it "
                               f"or fix the backend's destination owner." if destination_missing else
                               f"Replicate has no trainer {owner}/{model} with version {version[:12]}…: "
                               f"check the backend's trainer option.")
                exc.args = (exc.message,)
                exc.field = "destination" if destination_missing else "trainer"
            raise
        return Training.from_json(self._json(response))

    def get_training(self, training_id: str) -> Training:
        return Training.from_json(self._json(self._request(
            "GET", f"/v1/trainings/{_safe_id(training_id)}", retry_safe=True,
            not_found=f"Replicate has no training {training_id} for this account.")))

    def cancel_training(self, training_id: str) -> Training:
        """Ask Replicate to stop; returns the training (its status may still say processing for a moment)."""
        return Training.from_json(self._json(self._request(
            "POST", f"/v1/trainings/{_safe_id(training_id)}/cancel", retry_safe=True,
            not_found=f"Replicate has no training {training_id} for this account.")))

    def list_trainings(self, max_pages: int = 5) -> Iterator[Training]:
        """The account's trainings, newest first, following `next` for at most `max_pages` pages."""
        path: str | None = "/v1/trainings"
        for _ in range(max_pages):
            if path is None:
                return
            data = self._json(self._request("GET", path, retry_safe=True))
            for item in data.get("results") or []:
                yield Training.from_json(item)
            path = self._same_origin_path(data.get("next"))

    def find_training(self, input_images: str, max_pages: int = 5) -> Training | None:
        """The newest training whose input_images is this upload: how a re-attach finds a training
        whose create call failed with `may_have_started` (the upload URL is unique to one job)."""
        for training in self.list_trainings(max_pages):
            if training.input.get("input_images") == input_images:
                return training
        return None

    def _same_origin_path(self, url: Any) -> str | None:
        # `next` is an absolute URL; follow it only on our API host, so the token never goes elsewhere.
        if not isinstance(url, str) or not url:
            return None
        base, target = urlsplit(self.base_url), urlsplit(url)
        if (target.scheme, target.netloc) != (base.scheme, base.netloc):
            raise ReplicateError("Replicate's next-page link points to another host; refusing to follow it.")
        return target.path + (f"?{target.query}" if target.query else "")

    # -- weights --------------------------------------------------------------------------------------
    def download_weights(self, url: str, target_dir: Path, limits: ArchiveLimits | None = None) -> ExtractedWeights:
        """Fetch `output.weights`, check the tar entry by entry, keep only `target_dir/lora.safetensors`."""
        limits = limits or ArchiveLimits()
        target = urlsplit(url or "")
        loopback = target.hostname in LOOPBACK_HOSTS
        if target.scheme != "https" and not (target.scheme == "http" and loopback):
            raise ReplicateError("The weights URL Replicate gave is not https; refusing to fetch it.")
        base = urlsplit(self.base_url)
        client = self._api if (target.scheme, target.netloc) == (base.scheme, base.netloc) else self._plain
        target_dir.mkdir(parents=True, exist_ok=True)
        tar_path = target_dir / ".weights-download.tar"
        try:
            self._stream_to(client, url, tar_path, limits.max_download_bytes)
            try:
                return extract_lora(tar_path, target_dir, limits)
            except ArchiveError as exc:
                raise ReplicateError(f"The trained weights cannot be used: {exc}") from exc
        finally:
            tar_path.unlink(missing_ok=True)

    def _stream_to(self, client: httpx.Client, url: str, path: Path, max_bytes: int) -> None:
        try:
            with client.stream("GET", url, timeout=self.timeouts.for_download()) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response, "Replicate no longer has the trained weights (HTTP 404).")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ReplicateError(f"The trained weights are {int(declared) / 1024**2:.0f} MB, over the "
                                         f"{max_bytes / 1024**2:.0f} MB limit.")
                written = 0
                with path.open("wb") as out:
                    for chunk in response.iter_bytes(1024 * 1024):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ReplicateError(f"The trained weights are over the {max_bytes / 1024**2:.0f} MB limit.")
                        out.write(chunk)
        except httpx.TimeoutException as exc:
            raise ReplicateError("Downloading the trained weights timed out.", retryable=True) from exc
        except httpx.TransportError as exc:
            raise ReplicateError(f"Downloading the trained weights failed ({type(exc).__name__}).",
                                 retryable=True) from exc


def _safe_id(training_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", training_id or ""):
        raise ReplicateError(f"{training_id!r} is not a Replicate training id.")
    return training_id
