"""Training pages under /teams/<slug>/ (the dashboard itself is the team's home, in lorasite/urls.py)."""

from __future__ import annotations

from django.urls import path

from training_app import views

app_name = "training"

urlpatterns = [
    path("teams/<slug:slug>/train/", views.new_training, name="new"),
    path("teams/<slug:slug>/jobs/<uuid:job_id>/", views.job_page, name="job"),
    path("teams/<slug:slug>/jobs/<uuid:job_id>/<str:action>/", views.job_control, name="job-control"),
    path("teams/<slug:slug>/compare/", views.compare, name="compare"),
    path("teams/<slug:slug>/settings/", views.team_settings, name="settings"),
]
