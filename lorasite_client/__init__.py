"""A Python client for the lorasite API and its job websockets; needs only httpx and websockets.

    from lorasite_client import Client
    with Client.from_env() as portal:          # LORASITE_URL, LORASITE_TOKEN
        dataset = portal.create_dataset("shapes")
        portal.upload_folder(dataset.id, "shots/")
        job = portal.submit_job(dataset.id, "tiny-sd15", preset="fast")
        for message in portal.follow(job.id):
            print(message.type, message.step)
        portal.download_weights(job.id, "shapes.safetensors")
"""

from __future__ import annotations

from lorasite_client.client import Client
from lorasite_client.errors import (
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    LorasiteError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ValidationError,
)
from lorasite_client.models import (
    TERMINAL_STATUSES,
    Artifact,
    Backend,
    BaseModel,
    CaptionRun,
    CaptionToolResult,
    Dataset,
    DatasetStats,
    Estimate,
    Image,
    Job,
    JobMessage,
    LibraryEntry,
    Me,
    Preset,
    Team,
    UploadReport,
)
from lorasite_client.uploads import ProgressBar, UploadProgress

__all__ = [
    "TERMINAL_STATUSES", "Artifact", "AuthenticationError", "Backend", "BaseModel", "CaptionRun", "CaptionToolResult",
    "Client", "ConflictError", "ConnectionFailed", "Dataset", "DatasetStats", "Estimate", "Image", "Job", "JobMessage",
    "LibraryEntry", "LorasiteError", "Me", "NotFoundError", "PermissionDeniedError", "Preset", "ProgressBar",
    "RateLimitedError", "ServerError", "Team", "UploadProgress", "UploadReport", "ValidationError",
]
