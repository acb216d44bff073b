"""Training jobs and what they produce: progress, loss points, logs, artifacts; base models to train on."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class Family(models.TextChoices):
    SD15 = "sd15", "Stable Diffusion 1.5"
    SDXL = "sdxl", "Stable Diffusion XL"
    FLUX = "flux", "Flux.1"


class BaseModel(models.Model):
    """A base checkpoint jobs can train on. `team` empty: offered to every team."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.SlugField(max_length=80, help_text="What scripts pass as base_model, e.g. tiny-sd15")
    family = models.CharField(max_length=10, choices=Family.choices)
    location = models.CharField(
        max_length=500,
        help_text="A diffusers folder or a .safetensors/.ckpt file, relative to LORASITE_MODELS_DIR or absolute; "
                  "for remote backends, the backend's model identifier",
    )
    description = models.CharField(max_length=300, blank=True)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="base_models")
    enabled = models.BooleanField(default=True)
    random_weights = models.BooleanField(
        default=False, help_text="A model with untrained weights (the demo's tiny models): its samples are noise")
    weights_sha256 = models.CharField(
        max_length=64, blank=True,
        help_text="sha256 of the weights file (a diffusers folder's UNet file), for LoRA headers; empty: not hashed yet")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["name"], name="unique_base_model_name")]

    def __str__(self) -> str:
        return self.name

    def store_weights_sha256(self, path) -> str:
        """Hash the weights file at `path` (streamed, 1 MiB at a time) and store the digest.

        Raises `ModelHashError` when `path` holds no weights file to hash."""
        from training_app.trainer.model_hash import base_model_sha256

        self.weights_sha256 = base_model_sha256(path)
        BaseModel.objects.filter(pk=self.pk).update(weights_sha256=self.weights_sha256)
        return self.weights_sha256


class BackendType(models.TextChoices):
    COMFYUI = "comfyui", "ComfyUI server"
    REPLICATE = "replicate", "Replicate"


class BackendConfig(models.Model):
    """A remote backend jobs can run on, by name: a team's own, or (team empty) offered to every team.

    The token is never stored: `token_env` names the environment variable of the worker and web
    processes that holds it."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="backend_configs")
    name = models.SlugField(max_length=40, help_text="What jobs and scripts name it by, e.g. desk-comfy")
    type = models.CharField(max_length=12, choices=BackendType.choices)
    base_url = models.URLField(max_length=300)
    token_env = models.CharField(max_length=100, blank=True,
                                 help_text="Name of the environment variable holding the API token (never the token)")
    request_timeout_seconds = models.FloatField(default=30.0, help_text="Each HTTP call to the backend")
    overall_timeout_seconds = models.PositiveIntegerField(default=48 * 3600,
                                                          help_text="A run taking longer is cancelled")
    max_concurrent_jobs = models.PositiveIntegerField(default=1, help_text="Jobs that may run on it at once")
    options = models.JSONField(default=dict, blank=True, help_text="Per type; see docs/backends.md")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="unique_backend_name_per_team"),
            models.UniqueConstraint(fields=["name"], condition=models.Q(team__isnull=True),
                                    name="unique_global_backend_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELLING = "cancelling", "Cancelling"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)
FINISHED_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class TrainingJob(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="jobs")
    dataset = models.ForeignKey("datasets.Dataset", null=True, on_delete=models.SET_NULL, related_name="jobs")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                   related_name="training_jobs")
    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    backend = models.CharField(max_length=40)
    backend_config = models.ForeignKey(BackendConfig, null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="jobs", help_text="The remote backend named by `backend`")
    preset = models.CharField(max_length=40, blank=True)
    config = models.JSONField(help_text="The validated training config, frozen at submit")
    snapshot = models.JSONField(help_text="Image ids, sha256, paths and captions at submit; later edits do not apply")
    snapshot_sha256 = models.CharField(max_length=64)
    image_count = models.PositiveIntegerField(default=0)

    status = models.CharField(max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    priority = models.IntegerField(default=0, help_text="Higher runs first within a team's queue")
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    avg_loss = models.FloatField(null=True, blank=True)
    lr = models.FloatField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    phase = models.JSONField(default=dict, blank=True,
                             help_text="What the run is doing: {name, done, total}, e.g. caching latents 3 of 8")
    error = models.TextField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True,
                                         help_text="When its message was sent for this attempt; empty: not sent yet")
    dispatch_message_id = models.CharField(max_length=64, blank=True, help_text="The broker message of this attempt")
    not_before = models.DateTimeField(null=True, blank=True, help_text="A retry after a backend error waits until then")
    idempotency_key = models.CharField(max_length=200, blank=True,
                                       help_text="The submitter's Idempotency-Key: a retried submit returns this job")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    worker_id = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker has started this job")
    remote_id = models.CharField(max_length=200, blank=True, help_text="The run's id on its remote backend")
    cost_usd = models.FloatField(null=True, blank=True, help_text="What the remote backend billed for the run")
    checkpoint_path = models.CharField(max_length=500, blank=True)
    requested_actions = models.JSONField(default=list, blank=True,
                                         help_text="'sample'/'save' asked from the portal, taken at the next step")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["team", "status", "-priority", "queued_at"], name="job_team_queue"),
            models.Index(fields=["status", "heartbeat_at"], name="job_status_heartbeat"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["created_by", "idempotency_key"], condition=~models.Q(idempotency_key=""),
                                    name="unique_job_idempotency_key"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def percent(self) -> float:
        if not self.total_steps:
            return 100.0 if self.status == JobStatus.COMPLETED else 0.0
        return round(100.0 * min(self.step, self.total_steps) / self.total_steps, 2)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def blob_holder(self) -> str:
        """The name under which this job holds its snapshot's image bytes (datasets_app BlobHold)."""
        return f"training-job:{self.uuid}"

    def output_dir_name(self) -> str:
        """Storage-relative folder of this job's files under MEDIA_ROOT."""
        return f"jobs/{self.uuid}"


class LossPoint(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="loss_points")
    step = models.PositiveIntegerField()
    loss = models.FloatField()
    lr = models.FloatField(null=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["step"]
        indexes = [models.Index(fields=["job", "step"], name="losspoint_job_step")]

    def __str__(self) -> str:
        return f"step {self.step}: {self.loss:.4f}"


class JobLog(models.Model):
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="logs")
    line = models.TextField()
    at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.line[:80]


class ArtifactKind(models.TextChoices):
    LORA_KOHYA = "lora_kohya", "LoRA (kohya / A1111 / ComfyUI layout)"
    LORA_DIFFUSERS = "lora_diffusers", "LoRA (diffusers layout)"
    LORA_REMOTE = "lora_remote", "LoRA as the remote trainer wrote it"
    CHECKPOINT = "checkpoint", "Resumable checkpoint"
    SAMPLE = "sample", "Sample image"


class Artifact(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="artifacts")
    kind = models.CharField(max_length=20, choices=ArtifactKind.choices)
    path = models.CharField(max_length=500, help_text="Relative to MEDIA_ROOT")
    size_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    step = models.PositiveIntegerField(null=True, blank=True)
    prompt = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


class ReplicateTraining(models.Model):
    """What the portal keeps of a job's Replicate training besides its id (`TrainingJob.remote_id`).

    `input_images` is the job's own upload: unique to it, so a training whose create call timed out is
    found by it. `latest` is the newest training JSON a webhook delivered: the worker following the job
    reads it instead of polling Replicate. `log_cursor` says how much of the training's logs the job's
    log already has, so a worker that re-attaches does not stream them twice."""

    job = models.OneToOneField(TrainingJob, on_delete=models.CASCADE, related_name="replicate_training")
    input_images = models.CharField(max_length=500, blank=True)
    uploaded_at = models.DateTimeField(null=True, blank=True)
    training_id = models.CharField(max_length=64, blank=True, db_index=True)
    latest = models.JSONField(null=True, blank=True)
    latest_at = models.DateTimeField(null=True, blank=True)
    log_cursor = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return self.training_id or self.input_images


class WebhookReceipt(models.Model):
    """A remote backend's webhook delivery already handled, by its id: a retried delivery is dropped."""

    backend_config = models.ForeignKey(BackendConfig, on_delete=models.CASCADE, related_name="webhook_receipts")
    webhook_id = models.CharField(max_length=200)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["backend_config", "webhook_id"], name="unique_webhook_receipt")]

    def __str__(self) -> str:
        return self.webhook_id


class TeamWebhook(models.Model):
    """A URL we POST to when one of the team's jobs ends, signed with the webhook's secret."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    # Kept in clear because we must sign with it; shown to the admin once, never rendered again.
    secret = models.CharField(max_length=80)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    last_status = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.url
