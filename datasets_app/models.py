"""Datasets, their images (bytes stored once per sha256) and the caption history of each image."""

from __future__ import annotations

from uuid import uuid4

from django.conf import settings
from django.db import models
from django.db.models import Q


class Dataset(models.Model):
    uuid = models.UUIDField(default=uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, default="")
    trigger_word = models.CharField(max_length=100, blank=True, default="",
                                    help_text="Token the LoRA learns; kohya export names its folder after it.")
    default_resolution = models.PositiveIntegerField(default=512)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="dataset_name_unique_in_team")]
        ordering = ["team__slug", "name"]

    def __str__(self) -> str:
        return f"{self.team.slug}/{self.name}"


class ReviewState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


class StoredBlob(models.Model):
    """One file on disk per distinct content; datasets share it. The last reference deletes it."""

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(max_length=200)
    thumbnail = models.FileField(max_length=200, blank=True)
    format = models.CharField(max_length=10)
    size_bytes = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.sha256[:12]


class BlobHold(models.Model):
    """Keeps a blob's bytes while something outside the datasets still needs them (a training job's
    frozen snapshot, named by `holder`), even after every image using it is deleted."""

    blob = models.ForeignKey(StoredBlob, on_delete=models.CASCADE, related_name="holds")
    holder = models.CharField(max_length=100)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["blob", "holder"], name="one_hold_per_holder")]

    def __str__(self) -> str:
        return f"{self.holder} holds {self.blob_id}"


class DatasetImage(models.Model):
    uuid = models.UUIDField(default=uuid4, unique=True, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="images")
    # PROTECT: a blob goes away only through the reference-counting path in storage.py.
    blob = models.ForeignKey(StoredBlob, on_delete=models.PROTECT, related_name="images")
    sha256 = models.CharField(max_length=64)
    # Room for a later signature format without widening the column again.
    phash = models.CharField(max_length=1024, blank=True, default="",
                             help_text="Perceptual signature (near_duplicates.signature: edge map and colour "
                                       "layout of the thumbnail); blank or an older format takes no part.")
    near_duplicate_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="near_duplicates")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    format = models.CharField(max_length=10)
    size_bytes = models.PositiveBigIntegerField()
    original_name = models.CharField(max_length=255, blank=True, default="")
    review_state = models.CharField(max_length=10, choices=ReviewState.choices, default=ReviewState.PENDING)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    reviewed_at = models.DateTimeField(null=True, blank=True)
    repeats = models.PositiveIntegerField(default=1)
    # A copy of the current Caption's text so lists and training snapshots need no join; only the
    # caption functions in captions.py write it.
    caption = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset", "sha256"], name="image_bytes_once_per_dataset")]
        indexes = [models.Index(fields=["dataset", "review_state", "id"], name="image_by_state")]
        ordering = ["id"]

    def __str__(self) -> str:
        return self.original_name or self.sha256[:12]


class CaptionSource(models.TextChoices):
    MANUAL = "manual", "Manual"
    IMPORT = "import", "Import"
    PROVIDER = "provider", "Captioning provider"
    TOOL = "tool", "Caption tool"


class Caption(models.Model):
    image = models.ForeignKey(DatasetImage, on_delete=models.CASCADE, related_name="captions")
    text = models.TextField(blank=True, default="")
    source = models.CharField(max_length=10, choices=CaptionSource.choices, default=CaptionSource.MANUAL)
    provider_model = models.CharField(max_length=200, blank=True, default="")
    # Captions written by one dataset-wide tool run share a batch, so the run can be undone as one.
    batch = models.UUIDField(null=True, blank=True, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    is_current = models.BooleanField(default=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image"], condition=Q(is_current=True),
                                               name="one_current_caption_per_image")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.text[:60]


class ProviderType(models.TextChoices):
    HF = "hf", "Hugging Face image-to-text endpoint"
    OPENAI = "openai", "OpenAI-compatible vision chat"
    OLLAMA = "ollama", "Ollama"
    LOCAL = "local", "Local transformers model"
    SIMPLE = "simple", "Template"


class CaptionProvider(models.Model):
    """A captioner a team (or, with no team, every team) can use. The API key is never stored:
    `api_key_env` names the environment variable that holds it on the captioning workers."""

    uuid = models.UUIDField(default=uuid4, unique=True, editable=False)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="caption_providers", help_text="Empty: available to every team.")
    name = models.CharField(max_length=80)
    type = models.CharField(max_length=10, choices=ProviderType.choices)
    base_url = models.CharField(max_length=500, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    prompt = models.TextField(blank=True, default="", help_text="Default prompt (the template for `simple`).")
    api_key_env = models.CharField(max_length=100, blank=True, default="",
                                   help_text="NAME of the environment variable holding the key, e.g. CAPTION_KEY_DEMO.")
    concurrency = models.PositiveIntegerField(default=4)
    timeout_seconds = models.PositiveIntegerField(default=60)
    max_image_side = models.PositiveIntegerField(default=768)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "name"], name="caption_provider_name_unique_in_team"),
            models.UniqueConstraint(fields=["name"], condition=Q(team__isnull=True),
                                    name="global_caption_provider_name_unique"),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.team.slug if self.team_id else 'global'}/{self.name}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    CANCELLING = "cancelling", "Cancelling"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class CaptionMode(models.TextChoices):
    UNCAPTIONED = "uncaptioned", "Only images without a caption"
    OVERWRITE = "overwrite", "Replace every caption"
    PREPEND = "prepend", "Put the new caption before the old one"
    APPEND = "append", "Put the new caption after the old one"


class CaptionRun(models.Model):
    """One auto-captioning pass over a dataset. Provider, model, prompt, mode and post-processing
    are recorded as they were when it started; its captions carry its uuid as their batch."""

    uuid = models.UUIDField(default=uuid4, unique=True, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="caption_runs")
    provider = models.ForeignKey(CaptionProvider, null=True, on_delete=models.SET_NULL, related_name="runs")
    provider_name = models.CharField(max_length=80)
    provider_type = models.CharField(max_length=10, choices=ProviderType.choices)
    model = models.CharField(max_length=200, blank=True, default="")
    prompt = models.TextField(blank=True, default="")
    mode = models.CharField(max_length=12, choices=CaptionMode.choices, default=CaptionMode.UNCAPTIONED)
    postprocess = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    worker_id = models.CharField(max_length=200, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written by the worker while it runs; a stale one means the worker died and the run is re-sent.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    resent_at = models.DateTimeField(null=True, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="caption_run_by_status")]

    def __str__(self) -> str:
        return f"{self.provider_name} on {self.dataset_id} ({self.status})"


class ItemStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class CaptionRunItem(models.Model):
    """One image of a run. Its status is the idempotency key: a result is saved only while the item
    is pending, under its row lock, so a re-delivered run never writes a second version."""

    run = models.ForeignKey(CaptionRun, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(DatasetImage, on_delete=models.CASCADE, related_name="caption_run_items")
    status = models.CharField(max_length=8, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    error = models.TextField(blank=True, default="")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "image"], name="one_item_per_image_per_run")]
        indexes = [models.Index(fields=["run", "status"], name="caption_item_by_status")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.image_id}: {self.status}"
