from __future__ import annotations

from django.contrib import admin

from training_app.models import Artifact, BaseModel, TrainingJob


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
