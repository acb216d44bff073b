from __future__ import annotations

from django import forms
from django.contrib import admin

from lorasite.errors import InvalidInput
from training_app import backend_configs
from training_app.models import Artifact, BackendConfig, BaseModel, TrainingJob


class BackendConfigForm(forms.ModelForm):
    class Meta:
        model = BackendConfig
        fields = ["team", "name", "type", "base_url", "token_env", "request_timeout_seconds",
                  "overall_timeout_seconds", "max_concurrent_jobs", "options", "enabled"]

    def clean(self):
        data = super().clean()
        try:
            # The same checks as the Settings page and add_backend (token_env must be a NAME, options per type).
            data.update(backend_configs.clean({key: data.get(key) for key in backend_configs.FIELDS}))
        except InvalidInput as exc:
            for error in exc.errors:
                field = error["loc"][0] if error["loc"] and error["loc"][0] in self.fields else None
                self.add_error(field, error["msg"])
        return data


@admin.register(BackendConfig)
class BackendConfigAdmin(admin.ModelAdmin):
    form = BackendConfigForm
    list_display = ["name", "type", "team", "base_url", "max_concurrent_jobs", "enabled"]
    list_filter = ["type", "enabled"]
    search_fields = ["name", "base_url"]


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ["name", "family", "location", "team", "enabled"]
    list_filter = ["family", "enabled"]
    search_fields = ["name", "location"]


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    readonly_fields = ["kind", "path", "size_bytes", "sha256", "step", "created_at"]
    can_delete = False


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "status", "backend", "step", "total_steps", "attempts", "created_at"]
    list_filter = ["status", "backend", "team"]
    search_fields = ["name", "uuid"]
    # Status changes go through the lifecycle module, never a form.
    readonly_fields = ["status", "step", "total_steps", "loss", "avg_loss", "lr", "eta_seconds", "worker_id",
                       "heartbeat_at", "attempts", "started_at", "finished_at", "snapshot", "snapshot_sha256", "config"]
    inlines = [ArtifactInline]
