"""Dataset pages under /teams/<slug>/datasets/ and image bytes under /images/<uuid>/."""

from __future__ import annotations

from django.urls import path

from datasets_app import caption_views, views

app_name = "datasets"

urlpatterns = [
    path("teams/<slug:slug>/datasets/", views.dataset_list, name="list"),
    path("teams/<slug:slug>/captioners/", caption_views.captioners, name="captioners"),
    path("teams/<slug:slug>/datasets/<uuid:dataset_id>/", views.dataset_detail, name="detail"),
    path("teams/<slug:slug>/datasets/<uuid:dataset_id>/review/", views.dataset_review, name="review"),
    path("teams/<slug:slug>/datasets/<uuid:dataset_id>/edit/", views.dataset_edit, name="edit"),
    path("teams/<slug:slug>/datasets/<uuid:dataset_id>/delete/", views.dataset_delete, name="delete"),
    path("images/<uuid:image_id>/thumbnail", views.image_thumbnail, name="image-thumbnail"),
    path("images/<uuid:image_id>/file", views.image_file, name="image-file"),
]
