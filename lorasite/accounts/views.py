"""HTML pages: the dashboard entry and personal settings (API tokens)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from lorasite.accounts import access
from lorasite.accounts.models import ApiToken


@login_required
def dashboard(request):
    memberships = list(access.memberships(request.user))
    if len(memberships) == 1:
        return redirect("team-dashboard", slug=memberships[0].team.slug)
    return render(request, "accounts/dashboard.html", {"memberships": memberships})


@login_required
def tokens(request):
    new_token = None
    if request.method == "POST":
        name = (request.POST.get("name") or "").strip()[:100]
        if not name:
            messages.error(request, "Give the token a name, so you can recognise it later.")
        else:
            _, new_token = ApiToken.issue(request.user, name)
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "accounts/tokens.html", {"tokens": tokens, "new_token": new_token})


@login_required
@require_POST
def revoke_token(request, token_id):
    token = get_object_or_404(ApiToken, uuid=token_id, user=request.user)
    token.revoke()
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("settings-tokens")
