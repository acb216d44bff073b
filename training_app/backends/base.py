"""The contract between the portal and every training backend (local GPU, ComfyUI, Replicate).

A backend validates what it supports, says whether it is available, and runs one job to the end
while feeding a reporter (the same Reporter the trainer uses: step/log/sample/checkpoint, and
should_stop/pending_actions polled at each step). Remote backends poll their service inside
`run` and translate its events into reporter calls; `cancel` asks the remote side to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from training_app.config import TrainingConfig
    from training_app.models import BaseModel, TrainingJob


class BackendError(Exception):
    """A failure whose message the user sees; `retryable` says whether running again may help, and
    `retry_after` (seconds) when the remote side said how long to wait (a 429's reset)."""

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class RunOutcome:
    stopped: bool
    lora_files: dict[str, Path] = field(default_factory=dict)  # artifact kind -> file under MEDIA_ROOT
    final_loss: float | None = None
    steps_completed: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


class TrainingBackend(Protocol):
    name: str
    label: str
    queue: str  # the Dramatiq queue whose workers run this backend's jobs
    actor_name: str  # the Dramatiq actor (on that queue) that runs one job
    families: tuple[str, ...]
    paid: bool

    def availability(self) -> tuple[bool, str]: ...

    def validate(self, config: TrainingConfig, base_model: BaseModel) -> list[dict[str, Any]]: ...

    def run(self, job: TrainingJob, reporter: Any) -> RunOutcome: ...

    def cancel(self, job: TrainingJob) -> None: ...
