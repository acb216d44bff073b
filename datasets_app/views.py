"""Dataset pages (list, grid, review mode) and the access-checked views that serve image bytes."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.serializers.json import DjangoJSONEncoder
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from datasets_app import caption_runs, queries, services
from datasets_app.caption_providers import usable_by
from datasets_app.captioning import tokens
from datasets_app.imaging import convert_format, open_image
from datasets_app.models import CaptionMode, DatasetImage, ReviewState
from datasets_app.stats import dataset_stats
from datasets_app.storage import media_path
from lorasite.accounts import access
from lorasite.accounts.auth import parse_bearer
from lorasite.accounts.models import ApiToken, Role
from lorasite.accounts.pages import page_errors, team_for_page
from lorasite.errors import DomainError

GRID_PAGE_SIZE = 48
# Formats every current browser shows in an <img>; others (TIFF) are converted on the way out.
_BROWSER_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif",
                    "BMP": "image/bmp"}


def _dataset_or_404(user, team, dataset_id, needed: Role = Role.VIEWER):
    with page_errors("Dataset not found"):
        dataset = queries.get_dataset(user, dataset_id, needed=needed)
    if dataset.team_id != team.pk:
        raise Http404("Dataset not found")
    return dataset


@login_required
def dataset_list(request, slug: str):
    team = team_for_page(request.user, slug)
    role = access.role_in(request.user, team)
    if request.method == "POST":
        team = team_for_page(request.user, slug, needed=Role.MEMBER)
        try:
            dataset = services.create_dataset(team, request.user, request.POST.get("name", ""),
                                              request.POST.get("description", ""),
                                              request.POST.get("trigger_word", ""),
                                              _resolution(request.POST.get("default_resolution")))
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            return redirect("datasets:detail", slug=team.slug, dataset_id=dataset.uuid)
    datasets = queries.datasets_for(request.user, team)
    return render(request, "datasets/list.html", {"team": team, "role": role, "datasets": datasets,
                                                  "can_write": role.allows(Role.MEMBER)})


COMMON_RESOLUTIONS = (512, 768, 1024)


def resolution_choices(dataset, stats: dict) -> list[int]:
    """The crop preview's sizes: the dataset's own training resolution, the size its most common
    images already have (in 64 px steps), and the families' common ones (SD 1.5: 512/768, SDXL: 1024)."""
    choices = set(COMMON_RESOLUTIONS) | {dataset.default_resolution}
    common = stats["resolution"]["common"]
    if common:
        side = min(common[0]["width"], common[0]["height"]) // 64 * 64
        if 64 <= side <= 2048:
            choices.add(side)
    return sorted(choices)


@login_required
def dataset_detail(request, slug: str, dataset_id):
    team = team_for_page(request.user, slug)
    dataset = _dataset_or_404(request.user, team, dataset_id)
    role = access.role_in(request.user, team)
    state = request.GET.get("state", "")
    state = state if state in ReviewState.values else ""
    run = _run_filter(request, dataset)
    page = queries.image_page(dataset, state, _page(request.GET.get("page")), GRID_PAGE_SIZE, caption_run=run)
    runs = caption_runs.runs_for(dataset, limit=5)
    latest = caption_runs.run_out(runs[0], errors=20) if runs else None
    stats = dataset_stats(dataset)
    context = {
        "team": team, "dataset": dataset, "role": role, "can_write": role.allows(Role.MEMBER),
        "state": state, "states": ReviewState.choices, "page": page, "stats": stats,
        "resolutions": resolution_choices(dataset, stats),
        "run_filter": run, "caption_runs": runs, "caption_modes": CaptionMode.choices,
        "token_limit": tokens.LIMIT, "caption_providers": list(usable_by(team).filter(enabled=True)),
        "page_json": json.dumps({"dataset": str(dataset.uuid), "state": state, "team": team.slug,
                                 "resolution": dataset.default_resolution, "tokenLimit": tokens.LIMIT,
                                 "run": str(run.uuid) if run else "", "latestRun": latest,
                                 "reviewUrl": reverse("datasets:review", args=[team.slug, dataset.uuid]),
                                 "trigger": dataset.trigger_word}, cls=DjangoJSONEncoder),
    }
    return render(request, "datasets/detail.html", context)


def _run_filter(request, dataset):
    """`?run=<uuid>`: only the images that caption run captioned (a run of this dataset)."""
    ref = request.GET.get("run", "")
    if not ref:
        return None
    with page_errors("Caption run not found"):
        run = caption_runs.get_run(request.user, ref)
    if run.dataset_id != dataset.pk:
        raise Http404("Caption run not found")
    return run


@login_required
def dataset_review(request, slug: str, dataset_id):
    team = team_for_page(request.user, slug)
    dataset = _dataset_or_404(request.user, team, dataset_id)
    role = access.role_in(request.user, team)
    state = request.GET.get("state", ReviewState.PENDING)
    state = state if state in ReviewState.values or state == "" else ReviewState.PENDING
    run = _run_filter(request, dataset)
    if run is not None and "state" not in request.GET:
        state = ""  # reviewing a run's captions: every image it captioned, whatever its state
    config = {"dataset": str(dataset.uuid), "state": state, "canWrite": role.allows(Role.MEMBER),
              "run": str(run.uuid) if run else "", "tokenLimit": tokens.LIMIT}
    return render(request, "datasets/review.html", {
        "team": team, "dataset": dataset, "role": role, "state": state, "states": ReviewState.choices,
        "run_filter": run, "config_json": json.dumps(config)})


@login_required
@require_POST
def dataset_edit(request, slug: str, dataset_id):
    team = team_for_page(request.user, slug)
    dataset = _dataset_or_404(request.user, team, dataset_id, needed=Role.MEMBER)
    try:
        services.update_dataset(dataset, name=request.POST.get("name", dataset.name),
                                description=request.POST.get("description", dataset.description),
                                trigger_word=request.POST.get("trigger_word", dataset.trigger_word),
                                default_resolution=_resolution(request.POST.get("default_resolution")))
        messages.success(request, "Dataset saved.")
    except DomainError as exc:
        messages.error(request, exc.message)
    return redirect("datasets:detail", slug=team.slug, dataset_id=dataset.uuid)


@login_required
@require_POST
def dataset_delete(request, slug: str, dataset_id):
    team = team_for_page(request.user, slug)
    dataset = _dataset_or_404(request.user, team, dataset_id, needed=Role.MEMBER)
    try:
        services.delete_dataset(dataset)
        messages.success(request, f"Dataset “{dataset.name}” deleted.")
    except DomainError as exc:
        messages.error(request, exc.message)
        return redirect("datasets:detail", slug=team.slug, dataset_id=dataset.uuid)
    return redirect("datasets:list", slug=team.slug)


def image_thumbnail(request, image_id):
    image = _image_for_request(request, image_id)
    return _serve(image.blob.thumbnail.name, "image/jpeg")


def image_file(request, image_id):
    """The original bytes; formats browsers cannot show (TIFF) come as PNG unless `?download=1`."""
    image = _image_for_request(request, image_id)
    name = image.blob.file.name
    if image.format in _BROWSER_FORMATS or request.GET.get("download"):
        response = _serve(name, _BROWSER_FORMATS.get(image.format, "application/octet-stream"))
        if request.GET.get("download"):
            response["Content-Disposition"] = f'attachment; filename="{image.sha256[:16]}.{name.rsplit(".", 1)[-1]}"'
        return response
    try:
        png = convert_format(open_image(media_path(name)), "PNG")
    except OSError:
        raise Http404("Image file missing") from None
    response = HttpResponse(png, content_type="image/png")
    return _private(response)


def _image_for_request(request, image_id):
    """Session users, bearer-token scripts and staff with the admin's view permission may read;
    everyone else gets the same 404 as for a missing image."""
    user = request.user
    if not user.is_authenticated:
        raw = parse_bearer(request.headers.get("Authorization", ""))
        user = ApiToken.authenticate(raw) if raw else None
        if user is None:
            raise Http404("Image not found")
    if user.has_perm("datasets.view_datasetimage"):
        image = DatasetImage.objects.select_related("blob").filter(uuid=image_id).first()
        if image is None:
            raise Http404("Image not found")
        return image
    with page_errors("Image not found"):
        return queries.get_image(user, image_id)


def _serve(name: str, content_type: str):
    path = media_path(name)
    try:
        handle = open(path, "rb")  # FileResponse closes it
    except OSError:
        raise Http404("Image file missing") from None
    return _private(FileResponse(handle, content_type=content_type))


def _private(response):
    # Content-addressed bytes never change, but they are a team's data: browsers may cache, proxies not.
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"
    return response


def _resolution(raw) -> int:
    try:
        return min(4096, max(64, int(raw)))
    except (TypeError, ValueError):
        return 512


def _page(raw) -> int:
    try:
        return max(1, int(raw))
    except (TypeError, ValueError):
        return 1

