"""HTML pages: the dashboard entry and personal settings (API tokens)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from lorasite.accounts import access, throttle
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


class ThrottledLoginView(LoginView):
    """Django's login, refusing further tries for a minute after AUTH_FAILURES_PER_MINUTE failures from
    one address or for one username: checked before the password, so a refused try reveals nothing."""

    def post(self, request, *args, **kwargs):
        username = request.POST.get("username", "")[:150].lower()
        if throttle.is_throttled("login", throttle.client_address(request), username):
            # An unbound form: binding it would check the password.
            form = self.get_form_class()(request, initial={"username": request.POST.get("username", "")})
            return self.render_to_response(self.get_context_data(form=form, throttled=True), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        throttle.record_failure("login", throttle.client_address(self.request),
                                self.request.POST.get("username", "")[:150].lower())
        return super().form_invalid(form)
