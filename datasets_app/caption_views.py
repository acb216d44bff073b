"""The team's Captioners page: providers with their live availability; admins add and remove them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render

from datasets_app.caption_providers import create_provider, usable_by, with_availability
from datasets_app.captioning.registry import TYPES
from datasets_app.models import CaptionProvider, ProviderType
from lorasite.accounts import access
from lorasite.accounts.models import Role
from lorasite.accounts.pages import team_for_page
from lorasite.errors import DomainError

_NUMBERS = {"concurrency": 4, "timeout_seconds": 60, "max_image_side": 768}


@login_required
def captioners(request, slug: str):
    team = team_for_page(request.user, slug)
    role = access.role_in(request.user, team)
    if request.method == "POST":
        team = team_for_page(request.user, slug, needed=Role.ADMIN)
        _handle_post(request, team)
        return redirect("datasets:captioners", slug=team.slug)
    providers = with_availability(list(usable_by(team).select_related("team")))
    return render(request, "datasets/captioners.html", {
        "team": team, "role": role, "can_admin": role.allows(Role.ADMIN), "providers": providers,
        "types": ProviderType.choices, "key_prefix": f"CAPTION_KEY_{team.slug.upper().replace('-', '_')}"})


def _handle_post(request, team) -> None:
    if request.POST.get("delete"):
        deleted, _ = CaptionProvider.objects.filter(team=team, uuid=_uuid_or_404(request.POST["delete"])).delete()
        if not deleted:
            raise Http404("No such captioner in this team")
        messages.success(request, "Captioner removed.")
        return
    fields = {key: request.POST.get(key, "").strip() for key in ("name", "type", "base_url", "model", "api_key_env")}
    fields["prompt"] = request.POST.get("prompt", "")
    try:
        for key, default in _NUMBERS.items():
            raw = request.POST.get(key, "").strip()
            fields[key] = int(raw) if raw else default
    except ValueError:
        messages.error(request, "Concurrency, timeout and image side are whole numbers.")
        return
    if fields["type"] not in TYPES:
        messages.error(request, f"Choose a type: {', '.join(TYPES)}.")
        return
    try:
        provider = create_provider(team, **fields)
    except DomainError as exc:
        messages.error(request, exc.message)
        return
    messages.success(request, f"Captioner “{provider.name}” added.")


def _uuid_or_404(value: str) -> str:
    if not access.looks_like_uuid(value):
        raise Http404("No such captioner in this team")
    return value
