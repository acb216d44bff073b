from __future__ import annotations

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from lorasite.accounts import views as account_views
from lorasite.api import api
from lorasite.health import healthz
from training_app import views as training_views

urlpatterns = [
    path("", account_views.dashboard, name="dashboard"),
    path("teams/<slug:slug>/", training_views.dashboard, name="team-dashboard"),
    path("settings/tokens/", account_views.tokens, name="settings-tokens"),
    path("settings/tokens/<uuid:token_id>/revoke/", account_views.revoke_token, name="settings-token-revoke"),
    path("accounts/login/", account_views.ThrottledLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("healthz", healthz, name="healthz"),
    # Pages name their icon; browsers and the admin still ask for /favicon.ico.
    path("favicon.ico", RedirectView.as_view(url=static("lorasite/favicon.svg"), permanent=True)),
    path("", include("datasets_app.urls")),
    path("", include("training_app.urls")),
]

handler400 = "lorasite.core.views.bad_request"
handler404 = "lorasite.core.views.page_not_found"
handler500 = "lorasite.core.views.server_error"
