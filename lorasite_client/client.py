"""The lorasite API client: datasets, uploads, captions, review, presets, estimates, jobs, weights."""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from lorasite_client.errors import ConnectionFailed, LorasiteError, ServerError, error_from_response
from lorasite_client.follow import follow_job
from lorasite_client.models import (
    Artifact,
    Backend,
    BaseModel,
    CaptionRun,
    CaptionToolResult,
    Dataset,
    DatasetStats,
    Estimate,
    Image,
    Job,
    JobMessage,
    LibraryEntry,
    Me,
    Preset,
    Team,
    UploadReport,
    from_api,
)
from lorasite_client.uploads import (
    MAX_BYTES_PER_REQUEST,
    MAX_FILES_PER_REQUEST,
    CountingReader,
    ProgressCallback,
    UploadProgress,
    folder_groups,
    request_batches,
)

LORA_KINDS = ("lora_kohya", "lora_diffusers", "lora_remote")
# A zip up to this size goes in one request; a larger one is re-packed into parts of about this size.
MAX_ZIP_BYTES_PER_REQUEST = 256 * 1024 * 1024


class Client:
    """A script's session with one portal. `Client.from_env()` reads LORASITE_URL and LORASITE_TOKEN
    (a token from `manage.py create_api_token` or POST /api/tokens). Every method raises a
    LorasiteError subclass with the server's message when the portal refuses."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url + "/api", timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        url, token = os.environ.get("LORASITE_URL", ""), os.environ.get("LORASITE_TOKEN", "")
        if not url or not token:
            raise LorasiteError("Set LORASITE_URL (e.g. http://127.0.0.1:8000) and LORASITE_TOKEN.")
        return cls(url, token, **options)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {path}: {exc}") from exc
        _raise_for_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ServerError(f"{method} {path} answered something that is not JSON", status=response.status_code,
                              body=response.text[:500]) from exc

    def _download(self, path: str, destination: str | os.PathLike[str], params: dict[str, Any] | None = None) -> Path:
        """Stream a file to `destination` (a file path, or a folder to keep the server's file name);
        written under a temporary name and renamed, so a broken download never looks finished."""
        wants_folder = str(destination).endswith(("/", os.sep))
        destination = Path(destination)
        if wants_folder:
            destination.mkdir(parents=True, exist_ok=True)
        try:
            with self._http.stream("GET", path, params=params) as response:
                if response.is_error:
                    response.read()
                    _raise_for_error(response)
                if destination.is_dir():
                    destination = destination / _attachment_name(response, fallback=Path(path).name)
                destination.parent.mkdir(parents=True, exist_ok=True)
                partial = destination.with_name(destination.name + ".part")
                with open(partial, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"GET {path}: {exc}") from exc
        partial.replace(destination)
        return destination

    # --- account ------------------------------------------------------------------------------

    def me(self) -> Me:
        data = self._json("GET", "/me")
        return Me(username=data["username"], email=data.get("email", ""), is_staff=data.get("is_staff", False),
                  teams=[from_api(Team, t) for t in data.get("teams", [])], raw=data)

    # --- datasets -----------------------------------------------------------------------------

    def list_datasets(self, team: str | None = None) -> list[Dataset]:
        return [from_api(Dataset, d) for d in self._json("GET", "/datasets", params=_params(team=team))]

    def create_dataset(self, name: str, *, team: str | None = None, description: str = "", trigger_word: str = "",
                       default_resolution: int = 512) -> Dataset:
        body = {"name": name, "team": team, "description": description, "trigger_word": trigger_word,
                "default_resolution": default_resolution}
        return from_api(Dataset, self._json("POST", "/datasets", json=body))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return from_api(Dataset, self._json("GET", f"/datasets/{dataset_id}"))

    def update_dataset(self, dataset_id: str, **fields: Any) -> Dataset:
        """name, description, trigger_word, default_resolution."""
        return from_api(Dataset, self._json("PATCH", f"/datasets/{dataset_id}", json=fields))

    def delete_dataset(self, dataset_id: str) -> None:
        self._json("DELETE", f"/datasets/{dataset_id}")

    def upload_files(self, dataset_id: str, paths: Iterable[str | os.PathLike[str]], *,
                     progress: ProgressCallback | None = None, max_files_per_request: int = MAX_FILES_PER_REQUEST,
                     max_bytes_per_request: int = MAX_BYTES_PER_REQUEST) -> UploadReport:
        """Upload images (and `name.txt` captions beside them, and zips) in as many requests as the
        limits need, each caption in the same request as its image."""
        files = [Path(p) for p in paths]
        by_stem = {}
        for path in files:
            by_stem.setdefault((path.parent, path.stem.lower()), []).append(path)
        groups = sorted(by_stem.values(), key=lambda g: [str(p) for p in g])
        return self._upload_groups(dataset_id, groups, progress, max_files_per_request, max_bytes_per_request)

    def upload_folder(self, dataset_id: str, folder: str | os.PathLike[str], *, progress: ProgressCallback | None = None,
                      max_files_per_request: int = MAX_FILES_PER_REQUEST,
                      max_bytes_per_request: int = MAX_BYTES_PER_REQUEST) -> UploadReport:
        """Every image under `folder` (recursively) with its caption file; hidden files are skipped."""
        folder = Path(folder)
        if not folder.is_dir():
            raise LorasiteError(f"{folder} is not a folder")
        return self._upload_groups(dataset_id, folder_groups(folder), progress, max_files_per_request,
                                   max_bytes_per_request)

    def upload_zip(self, dataset_id: str, zip_path: str | os.PathLike[str], *, progress: ProgressCallback | None = None,
                   max_bytes_per_request: int = MAX_ZIP_BYTES_PER_REQUEST) -> UploadReport:
        """A zip of images and captions (kohya folders such as `10_trigger/` keep their repeats). A zip
        larger than `max_bytes_per_request` is re-packed into parts, each image with its caption."""
        zip_path = Path(zip_path)
        total = zip_path.stat().st_size
        parts: Iterable[tuple[str, bytes | None]] = (
            [(zip_path.name, None)] if total <= max_bytes_per_request else _zip_parts(zip_path, max_bytes_per_request))
        report, sent = UploadReport(), 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            if progress:
                # Re-packed parts differ a little in size from the original: the bar never passes 100%.
                progress(UploadProgress(min(sent, total), total, 0, 1))

        for name, data in parts:
            with open(zip_path, "rb") if data is None else io.BytesIO(data) as handle:
                answer = self._json("POST", f"/datasets/{dataset_id}/images",
                                    files=[("files", (name, CountingReader(handle, counted), "application/zip"))])
            report = report.merged(answer)
        if progress:
            progress(UploadProgress(total, total, 1, 1))
        return report

    def _upload_groups(self, dataset_id: str, groups: list[list[Path]], progress: ProgressCallback | None,
                       max_files: int, max_bytes: int) -> UploadReport:
        files_total = sum(len(g) for g in groups)
        total = sum(p.stat().st_size for g in groups for p in g)
        sent = done = 0
        report = UploadReport()

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            if progress:
                progress(UploadProgress(min(sent, total), total, done, files_total))

        for batch in request_batches(groups, max_files, max_bytes):
            with contextlib.ExitStack() as stack:
                files = [("files", (p.name, CountingReader(stack.enter_context(open(p, "rb")), counted),
                                    _content_type(p))) for p in batch]
                answer = self._json("POST", f"/datasets/{dataset_id}/images", files=files)
            report = report.merged(answer)
            done += len(batch)
            if progress:
                progress(UploadProgress(min(sent, total), total, done, files_total))
        return report

    def import_dataset(self, zip_path: str | os.PathLike[str], *, team: str | None = None, name: str = "") -> Dataset:
        """Recreate a dataset from a `lorasite` export zip (images + manifest.json)."""
        zip_path = Path(zip_path)
        with open(zip_path, "rb") as handle:
            data = self._json("POST", "/datasets/import", data=_params(team=team, name=name or None),
                              files=[("files", (zip_path.name, handle, "application/zip"))])
        return from_api(Dataset, data["dataset"])

    def list_images(self, dataset_id: str, *, review_state: str = "", page: int = 1, page_size: int = 50,
                    caption_run: str | None = None) -> tuple[list[Image], int]:
        """One page of images and the total count."""
        data = self._json("GET", f"/datasets/{dataset_id}/images",
                          params=_params(review_state=review_state or None, page=page, page_size=page_size,
                                         caption_run=caption_run))
        return [from_api(Image, i) for i in data["results"]], data["count"]

    def iter_images(self, dataset_id: str, *, review_state: str = "", page_size: int = 100) -> Iterator[Image]:
        page = 1
        while True:
            images, count = self.list_images(dataset_id, review_state=review_state, page=page, page_size=page_size)
            yield from images
            if not images or page * page_size >= count:
                return
            page += 1

    def get_image(self, image_id: str) -> Image:
        return from_api(Image, self._json("GET", f"/images/{image_id}"))

    def update_image(self, image_id: str, *, caption: str | None = None, review_state: str | None = None,
                     repeats: int | None = None) -> Image:
        body = _params(caption=caption, review_state=review_state, repeats=repeats)
        return from_api(Image, self._json("PATCH", f"/images/{image_id}", json=body))

    def delete_image(self, image_id: str) -> None:
        self._json("DELETE", f"/images/{image_id}")

    def review(self, dataset_id: str, image_ids: Iterable[str], state: str) -> int:
        """Set `state` (approved, rejected, pending) on these images; returns how many changed."""
        body = {"review_state": state, "images": [str(i) for i in image_ids]}
        return self._json("POST", f"/datasets/{dataset_id}/review", json=body)["changed"]

    def stats(self, dataset_id: str) -> DatasetStats:
        return from_api(DatasetStats, self._json("GET", f"/datasets/{dataset_id}/stats"))

    def caption_tool(self, dataset_id: str, tool: str, **options: Any) -> CaptionToolResult:
        """Run one caption tool on every image (or those in `review_state=`): add_trigger, replace
        (find, replace, regex), clean_whitespace, truncate (max_length), truncate_words (max_words),
        truncate_tokens (max_tokens), append_tags (tags), strip_boilerplate, dedupe_tags, underscores,
        prefix / suffix (text). The result's `batch` undoes it."""
        body = {"tool": tool, **options}
        return from_api(CaptionToolResult, self._json("POST", f"/datasets/{dataset_id}/captions/tools", json=body))

    def undo_captions(self, dataset_id: str, batch: str) -> dict[str, int]:
        return self._json("POST", f"/datasets/{dataset_id}/captions/undo", json={"batch": str(batch)})

    def caption_history(self, image_id: str) -> list[dict[str, Any]]:
        return self._json("GET", f"/images/{image_id}/captions")

    def manifest(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/datasets/{dataset_id}/manifest")

    def export_dataset(self, dataset_id: str, destination: str | os.PathLike[str], *, format: str = "kohya") -> Path:
        """`kohya`: approved images and captions in `{repeats}_{trigger}/`; `lorasite`: everything plus
        manifest.json (for `import_dataset`)."""
        return self._download(f"/datasets/{dataset_id}/export", destination, params={"format": format})

    # --- auto-captioning ----------------------------------------------------------------------

    def caption_providers(self, team: str | None = None, *, check: bool = False) -> list[dict[str, Any]]:
        return self._json("GET", "/caption-providers", params=_params(team=team, check=str(check).lower()))

    def start_caption_run(self, dataset_id: str, provider: str, *, prompt: str | None = None,
                          mode: str | None = None, postprocess: list[dict[str, Any]] | None = None) -> CaptionRun:
        body = _params(provider=provider, prompt=prompt, mode=mode, postprocess=postprocess)
        return from_api(CaptionRun, self._json("POST", f"/datasets/{dataset_id}/caption", json=body))

    def get_caption_run(self, run_id: str) -> CaptionRun:
        return from_api(CaptionRun, self._json("GET", f"/caption-runs/{run_id}"))

    # --- training -----------------------------------------------------------------------------

    def presets(self) -> list[Preset]:
        return [from_api(Preset, p) for p in self._json("GET", "/presets")]

    def base_models(self, team: str | None = None) -> list[BaseModel]:
        return [from_api(BaseModel, m) for m in self._json("GET", "/base-models", params=_params(team=team))]

    def backends(self, team: str | None = None) -> list[Backend]:
        return [from_api(Backend, b) for b in self._json("GET", "/backends", params=_params(team=team))]

    def estimate(self, *, config: dict[str, Any] | None = None, preset: str | None = None,
                 dataset_id: str | None = None, image_count: int | None = None, base_model: str | None = None,
                 family: str | None = None, backend: str = "local", gpu: str = "h100") -> Estimate:
        """Steps, time, peak VRAM, file size and cost of a config; the server validates it as it would
        a job's (a bad value raises ValidationError naming the field)."""
        body = _params(config=config or {}, preset=preset, dataset_id=dataset_id, image_count=image_count,
                       base_model=base_model, family=family, backend=backend, gpu=gpu)
        return from_api(Estimate, self._json("POST", "/estimate", json=body))

    def submit_job(self, dataset_id: str, base_model: str, *, preset: str | None = None,
                   config: dict[str, Any] | None = None, backend: str = "local", name: str | None = None,
                   priority: int = 0, idempotency_key: str | None = None) -> Job:
        """Queue a training job. The Idempotency-Key (a fresh one unless given) makes a retry after a
        lost answer return the first job instead of training twice; the client retries once itself."""
        key = idempotency_key or str(uuid.uuid4())
        body = _params(dataset_id=str(dataset_id), base_model=base_model, preset=preset, config=config or {},
                       backend=backend, name=name, priority=priority)
        try:
            return _job(self._json("POST", "/jobs", json=body, headers={"Idempotency-Key": key}))
        except ConnectionFailed:
            return _job(self._json("POST", "/jobs", json=body, headers={"Idempotency-Key": key}))

    def get_job(self, job_id: str) -> Job:
        return _job(self._json("GET", f"/jobs/{job_id}"))

    def list_jobs(self, *, status: str | Iterable[str] | None = None, team: str | None = None,
                  limit: int = 100) -> list[Job]:
        if status is not None and not isinstance(status, str):
            status = ",".join(status)
        return [_job(j) for j in self._json("GET", "/jobs", params=_params(status=status, team=team, limit=limit))]

    def cancel_job(self, job_id: str) -> Job:
        return _job(self._json("POST", f"/jobs/{job_id}/cancel"))

    def retry_job(self, job_id: str) -> Job:
        return _job(self._json("POST", f"/jobs/{job_id}/retry"))

    def job_action(self, job_id: str, action: str) -> Job:
        """`sample` or `save`, done at the running job's next step."""
        return _job(self._json("POST", f"/jobs/{job_id}/actions", json={"action": action}))

    def job_events(self, job_id: str, *, since_step: int = 0, log_lines: int = 200) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{job_id}/events", params={"since_step": since_step, "log_lines": log_lines})

    def follow(self, job_id: str, **options: Any) -> Iterator[JobMessage]:
        """Live messages until the job ends, across dropped sockets (see `follow_job`)."""
        return follow_job(self, str(job_id), **options)

    def wait(self, job_id: str, **options: Any) -> Job:
        """Block until the job ends (following its websocket) and return it as stored."""
        for _ in self.follow(job_id, **options):
            pass
        return self.get_job(job_id)

    def artifacts(self, job_id: str) -> list[Artifact]:
        return [from_api(Artifact, a) for a in self._json("GET", f"/jobs/{job_id}/artifacts")]

    def download_weights(self, job_id: str, destination: str | os.PathLike[str], *, layout: str = "kohya") -> Path:
        """The job's LoRA (.safetensors): `kohya` for A1111/Forge/ComfyUI, `diffusers` for
        `load_lora_weights`, `remote` for a remote trainer's own file. `destination` may be a folder."""
        return self._download(f"/jobs/{job_id}/weights", destination, params={"layout": layout})

    def download_artifact(self, job_id: str, artifact_id: str, destination: str | os.PathLike[str]) -> Path:
        return self._download(f"/jobs/{job_id}/artifacts/{artifact_id}/download", destination)

    def library(self, *, team: str | None = None, limit: int = 100) -> list[LibraryEntry]:
        """Completed jobs with their LoRA files, newest first (the portal has no separate library
        endpoint: this is GET /jobs?status=completed plus each job's artifacts)."""
        entries = []
        for job in self.list_jobs(status="completed", team=team, limit=limit):
            loras = [a for a in self.artifacts(job.id) if a.kind in LORA_KINDS]
            entries.append(LibraryEntry(job=job, loras=loras))
        return entries


def _job(data: dict[str, Any]) -> Job:
    return from_api(Job, data)


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _raise_for_error(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    raise error_from_response(response.status_code, body, fallback_text=response.text)


def _attachment_name(response: httpx.Response, fallback: str) -> str:
    match = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    name = Path(match.group(1)).name if match else ""
    return name or fallback


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
            ".txt": "text/plain", ".zip": "application/zip"}.get(suffix, "application/octet-stream")


def _zip_parts(zip_path: Path, max_bytes: int) -> Iterator[tuple[str, bytes]]:
    """Re-pack a large zip into smaller ones, member paths unchanged and each image with its caption."""
    with zipfile.ZipFile(zip_path) as archive:
        members = [i for i in archive.infolist() if not i.is_dir()]
        groups: dict[str, list[zipfile.ZipInfo]] = {}
        for info in members:
            groups.setdefault(os.path.splitext(info.filename)[0], []).append(info)
        part, size, number = io.BytesIO(), 0, 0
        out = zipfile.ZipFile(part, "w", zipfile.ZIP_STORED)
        for group in groups.values():
            group_size = sum(i.compress_size for i in group)
            if size and size + group_size > max_bytes:
                out.close()
                number += 1
                yield f"{zip_path.stem}-part{number}.zip", part.getvalue()
                part, size = io.BytesIO(), 0
                out = zipfile.ZipFile(part, "w", zipfile.ZIP_STORED)
            for info in group:
                out.writestr(info, archive.read(info))
            size += group_size
        out.close()
        if size:
            number += 1
            yield f"{zip_path.stem}-part{number}.zip", part.getvalue()
