"""Django admin for datasets: image list with thumbnails, captions editable in the list (as new
versions), filters, bulk approve/reject, and the caption history inline."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from datasets_app.captions import set_caption
from datasets_app.models import (
    Caption,
    CaptionProvider,
    CaptionRun,
    CaptionRunItem,
    Dataset,
    DatasetImage,
    ReviewState,
)
from datasets_app.services import set_review_state


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "trigger_word", "default_resolution", "created_by", "updated_at"]
    list_filter = ["team"]
    search_fields = ["name", "trigger_word"]
    readonly_fields = ["uuid", "created_by", "created_at", "updated_at"]


class CaptionHistoryInline(admin.TabularInline):
    model = Caption
    fields = ["text", "source", "provider_model", "created_by", "created_at", "is_current"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["-id"]
    verbose_name_plural = "Caption history (newest first)"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DatasetImage)
class DatasetImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "original_name", "dataset", "review_state", "caption", "width", "height"]
    list_display_links = ["thumbnail", "original_name"]
    list_editable = ["caption"]
    list_filter = ["dataset", "review_state"]
    list_select_related = ["dataset__team", "blob"]
    search_fields = ["original_name", "caption", "sha256"]
    list_per_page = 50
    actions = ["approve", "reject"]
    inlines = [CaptionHistoryInline]
    fields = ["preview", "dataset", "original_name", "caption", "review_state", "repeats", "reviewed_by",
              "reviewed_at", "sha256", "near_duplicate_of", "width", "height", "format", "size_bytes"]
    # phash is left out: an opaque 531-character signature tells an admin nothing.
    readonly_fields = ["preview", "dataset", "original_name", "reviewed_by", "reviewed_at", "sha256",
                       "near_duplicate_of", "width", "height", "format", "size_bytes"]

    @admin.display(description="Image")
    def thumbnail(self, obj: DatasetImage):
        return format_html('<img src="{}" alt="" style="max-height:64px;max-width:96px">',
                           reverse("datasets:image-thumbnail", args=[obj.uuid]))

    @admin.display(description="Preview")
    def preview(self, obj: DatasetImage):
        return format_html('<img src="{}" alt="" style="max-height:256px">',
                           reverse("datasets:image-thumbnail", args=[obj.uuid]))

    def save_model(self, request, obj: DatasetImage, form, change) -> None:
        # The caption goes through set_caption so the edit becomes a new version in the history.
        if change and "caption" in form.changed_data:
            set_caption(obj, form.cleaned_data["caption"], request.user)
        if change and "review_state" in form.changed_data:
            set_review_state([obj], form.cleaned_data["review_state"], request.user)
            obj.refresh_from_db(fields=["reviewed_by", "reviewed_at"])
        super().save_model(request, obj, form, change)

    @admin.action(description="Approve selected images")
    def approve(self, request, queryset):
        changed = set_review_state(queryset, ReviewState.APPROVED, request.user)
        self.message_user(request, f"{changed} images approved.")

    @admin.action(description="Reject selected images")
    def reject(self, request, queryset):
        changed = set_review_state(queryset, ReviewState.REJECTED, request.user)
        self.message_user(request, f"{changed} images rejected.")

    def has_add_permission(self, request) -> bool:
        # Images come in through the upload paths, which validate and deduplicate them.
        return False


class CaptionProviderForm(forms.ModelForm):
    """The same checks as the API and the command: key variable naming, URL, model folder."""

    class Meta:
        model = CaptionProvider
        fields = ["team", "name", "type", "base_url", "model", "prompt", "api_key_env", "concurrency",
                  "timeout_seconds", "max_image_side", "enabled"]

    def clean(self):
        from datasets_app.caption_providers import validate
        from lorasite.errors import InvalidInput

        data = super().clean()
        try:
            self.validated = validate(data.get("team"), {k: data.get(k) for k in self.Meta.fields})
        except InvalidInput as exc:
            field = exc.errors[0]["loc"][0] if exc.errors else None
            raise forms.ValidationError({field: exc.message} if field in self.fields else exc.message) from None
        return data


@admin.register(CaptionProvider)
class CaptionProviderAdmin(admin.ModelAdmin):
    form = CaptionProviderForm
    list_display = ["name", "team", "type", "model", "base_url", "api_key_env", "concurrency", "enabled"]
    list_filter = ["type", "team", "enabled"]
    search_fields = ["name", "model"]
    readonly_fields = ["uuid", "created_at"]

    def save_model(self, request, obj, form, change):
        for key, value in form.validated.items():
            setattr(obj, key, value)
        super().save_model(request, obj, form, change)


class CaptionRunItemInline(admin.TabularInline):
    model = CaptionRunItem
    fields = ["image", "status", "error", "finished_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CaptionRun)
class CaptionRunAdmin(admin.ModelAdmin):
    list_display = ["uuid", "dataset", "provider_name", "model", "mode", "status", "done", "failed", "total",
                    "created_at"]
    list_filter = ["status", "provider_type", "mode"]
    readonly_fields = [f.name for f in CaptionRun._meta.fields]
    inlines = [CaptionRunItemInline]

    def has_add_permission(self, request) -> bool:
        return False  # runs start from the dataset page, the API or `manage.py caption_dataset`
