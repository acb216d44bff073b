"""Dataset endpoints: datasets, image upload and review, captions, stats, manifest, import and export."""

from __future__ import annotations

import contextlib
from uuid import UUID

from django.http import StreamingHttpResponse
from django.utils.text import slugify
from ninja import File, Form, Router, Status, UploadedFile

from datasets_app import caption_runs, captions, queries, services
from datasets_app.ingest import ingest_entries, limits_from_settings, upload_entries
from datasets_app.manifest import (
    EXPORT_FORMATS,
    MANIFEST_NAME,
    build_manifest,
    export_kohya,
    export_lorasite,
    import_manifest,
    parse_manifest,
)
from datasets_app.schemas import (
    BulkReviewIn,
    BulkReviewOut,
    CaptionOut,
    CaptionToolIn,
    CaptionToolOut,
    DatasetIn,
    DatasetOut,
    DatasetPatchIn,
    ImageOut,
    ImagePageOut,
    ImagePatchIn,
    ImportOut,
    IngestReportOut,
    RestoreIn,
    StatsOut,
    UndoIn,
    UndoOut,
)
from datasets_app.stats import dataset_stats
from lorasite.accounts import access
from lorasite.accounts.models import Role
from lorasite.errors import InvalidInput

router = Router(tags=["datasets"])


@router.post("/datasets", response={201: DatasetOut})
def create_dataset(request, payload: DatasetIn):
    team = access.get_team(request.user, payload.team, needed=Role.MEMBER)
    dataset = services.create_dataset(team, request.user, payload.name, payload.description,
                                      payload.trigger_word, payload.default_resolution)
    return Status(201, queries.dataset_out(dataset, image_count=0))


@router.get("/datasets", response=list[DatasetOut])
def list_datasets(request, team: str | None = None):
    team_obj = access.get_team(request.user, team) if team else None
    return [queries.dataset_out(d) for d in queries.datasets_for(request.user, team_obj)]


@router.post("/datasets/import", response={201: ImportOut})
def import_dataset(request, files: File[list[UploadedFile]], team: Form[str] = "", name: Form[str] = ""):
    """Recreate a dataset from a `lorasite` export zip, or from manifest.json plus its image files."""
    # Declared before /datasets/{dataset_id}, or "import" would be read as a dataset id (405).
    team_obj = access.get_team(request.user, team or None, needed=Role.MEMBER)
    limits = limits_from_settings()
    with contextlib.ExitStack() as stack:
        entries = []
        for upload in files:
            entries += upload_entries(upload.name or "upload", upload.file, upload.size, limits, stack)
        manifest_entry = next((e for e in entries if e.path.rsplit("/", 1)[-1] == MANIFEST_NAME and not e.error),
                              None)
        if manifest_entry is None:
            raise InvalidInput(f"No {MANIFEST_NAME} among the files.")
        parsed = parse_manifest(manifest_entry.read())
        dataset, report = import_manifest(team_obj, request.user, parsed, entries, name=name)
    return Status(201, {"dataset": queries.dataset_out(dataset), "report": report.as_dict()})


@router.get("/datasets/{dataset_id}", response=DatasetOut)
def get_dataset(request, dataset_id: UUID):
    return queries.dataset_out(queries.get_dataset(request.user, dataset_id))


@router.patch("/datasets/{dataset_id}", response=DatasetOut)
def patch_dataset(request, dataset_id: UUID, payload: DatasetPatchIn):
    dataset = queries.get_dataset(request.user, dataset_id, needed=Role.MEMBER)
    services.update_dataset(dataset, **payload.dict(exclude_none=True))
    return queries.dataset_out(dataset)


@router.delete("/datasets/{dataset_id}", response={204: None})
def delete_dataset(request, dataset_id: UUID):
    services.delete_dataset(queries.get_dataset(request.user, dataset_id, needed=Role.MEMBER))
    return Status(204, None)


@router.post("/datasets/{dataset_id}/images", response=IngestReportOut)
def upload_images(request, dataset_id: UUID, files: File[list[UploadedFile]]):
    """Each file an image or a zip; `name.txt` beside `name.png` is its caption. One bad file is
    reported in `rejected` and never stops the others."""
    dataset = queries.get_dataset(request.user, dataset_id, needed=Role.MEMBER)
    limits = limits_from_settings()
    with contextlib.ExitStack() as stack:
        entries = []
        for upload in files:
            entries += upload_entries(upload.name or "upload", upload.file, upload.size, limits, stack)
        report = ingest_entries(dataset, entries, user=request.user, limits=limits)
    services.touch(dataset)
    return report.as_dict()


@router.get("/datasets/{dataset_id}/images", response=ImagePageOut)
def list_images(request, dataset_id: UUID, review_state: str = "", page: int = 1, page_size: int = 50,
                crop_resolution: int | None = None, bucketing: bool = True, caption_run: UUID | None = None):
    """`crop_resolution` adds, per image, how it will be cropped for training at that resolution;
    `caption_run` keeps only the images that caption run captioned."""
    dataset = queries.get_dataset(request.user, dataset_id)
    run = caption_runs.get_run(request.user, caption_run) if caption_run else None
    if run is not None and run.dataset_id != dataset.pk:
        raise InvalidInput("That caption run belongs to another dataset.",
                           [{"loc": ["caption_run"], "msg": "not a run of this dataset"}])
    crop_at = None
    if crop_resolution is not None:
        if not 64 <= crop_resolution <= 4096:
            raise InvalidInput("crop_resolution must be between 64 and 4096.")
        crop_at = (crop_resolution, bucketing)
    return queries.image_page(dataset, review_state, page, page_size, crop_at, caption_run=run)


@router.post("/datasets/{dataset_id}/review", response=BulkReviewOut)
def bulk_review(request, dataset_id: UUID, payload: BulkReviewIn):
    dataset = queries.get_dataset(request.user, dataset_id, needed=Role.MEMBER)
    images = dataset.images.filter(uuid__in=payload.images)
    return {"changed": services.set_review_state(images, payload.review_state, request.user)}


@router.get("/datasets/{dataset_id}/stats", response=StatsOut)
def stats(request, dataset_id: UUID):
    return dataset_stats(queries.get_dataset(request.user, dataset_id))


@router.post("/datasets/{dataset_id}/captions/tools", response=CaptionToolOut)
def caption_tool(request, dataset_id: UUID, payload: CaptionToolIn):
    """Add the trigger word, find and replace, clean whitespace, truncate or append tags on every
    image; each change is a new caption version, and the returned `batch` undoes the run."""
    dataset = queries.get_dataset(request.user, dataset_id, needed=Role.MEMBER)
    tool = captions.ToolRequest(tool=payload.tool, find=payload.find, replace=payload.replace,
                                max_length=payload.max_length, tags=payload.tags,
                                review_state=payload.review_state or "", regex=payload.regex, text=payload.text,
                                max_words=payload.max_words, max_tokens=payload.max_tokens)
    return captions.run_tool(dataset, tool, request.user)


@router.post("/datasets/{dataset_id}/captions/undo", response=UndoOut)
def caption_undo(request, dataset_id: UUID, payload: UndoIn):
    dataset = queries.get_dataset(request.user, dataset_id, needed=Role.MEMBER)
    return captions.undo_batch(dataset, payload.batch, request.user)


@router.get("/datasets/{dataset_id}/manifest")
def manifest(request, dataset_id: UUID):
    return build_manifest(queries.get_dataset(request.user, dataset_id))


@router.get("/datasets/{dataset_id}/export")
def export(request, dataset_id: UUID, format: str = "kohya"):
    """`kohya`: approved images and `.txt` captions in `{repeats}_{trigger}/`; `lorasite`: every
    image plus manifest.json, which `POST /api/datasets/import` turns back into a dataset."""
    dataset = queries.get_dataset(request.user, dataset_id)
    if format not in EXPORT_FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(EXPORT_FORMATS)}.")
    stream = export_kohya(dataset) if format == "kohya" else export_lorasite(dataset)
    response = StreamingHttpResponse(stream, content_type="application/zip")
    filename = f"{slugify(dataset.name) or 'dataset'}-{format}.zip"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@router.get("/images/{image_id}", response=ImageOut)
def get_image(request, image_id: UUID):
    image = queries.get_image(request.user, image_id)
    return queries.image_out(image, image.dataset)


@router.patch("/images/{image_id}", response=ImageOut)
def patch_image(request, image_id: UUID, payload: ImagePatchIn):
    image = queries.get_image(request.user, image_id, needed=Role.MEMBER)
    if payload.caption is not None:
        captions.set_caption(image, payload.caption, request.user)
    if payload.review_state is not None:
        services.set_review_state([image], payload.review_state, request.user)
    if payload.repeats is not None:
        services.set_repeats(image, payload.repeats)
    image = queries.get_image(request.user, image_id)
    return queries.image_out(image, image.dataset)


@router.delete("/images/{image_id}", response={204: None})
def delete_image(request, image_id: UUID):
    services.delete_image(queries.get_image(request.user, image_id, needed=Role.MEMBER))
    return Status(204, None)


@router.get("/images/{image_id}/captions", response=list[CaptionOut])
def caption_history(request, image_id: UUID):
    return queries.caption_versions(queries.get_image(request.user, image_id))


@router.post("/images/{image_id}/captions/restore", response=ImageOut)
def restore_caption(request, image_id: UUID, payload: RestoreIn):
    image = queries.get_image(request.user, image_id, needed=Role.MEMBER)
    old = queries.caption_by_version(image, payload.version)
    captions.restore_caption(image, old.pk, request.user)
    return queries.image_out(image, image.dataset)
