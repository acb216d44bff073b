"""The contract between the portal and every training backend (local GPU, ComfyUI, Replicate).

Every backend says whether it is available, validates what it supports, estimates what a run costs
(None where it is free), runs one job to the end while feeding a reporter (the same Reporter the
trainer uses: step/log/sample/checkpoint, and should_stop/pending_actions), cancels, and shows its logs.

Remote backends (`RemoteBackend`) add the pieces the shared driver in `backends/remote.py` needs:
find a run already started for a job, submit one, follow it as a stream of `RemoteEvent`s, cancel
it remotely and fetch its weights. Their `run` is `remote.run_remote(self, job, reporter)`, so
re-attach, cancel, weight checks and cost are the same for every remote kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from training_app.config import TrainingConfig
    from training_app.models import BaseModel, TrainingJob


class BackendError(Exception):
    """A failure whose message the user sees; `retryable` says whether running again may help.

    `retry_after` (seconds) is the remote side's own word on when to come back (a 429's reset)."""

    def __init__(self, message: str, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class JobTakenOver(Exception):
    """This worker no longer owns the job (the reaper gave it to another): leave the row alone."""


@dataclass(frozen=True)
class Availability:
    available: bool
    detail: str
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. {"version": "0.3.64", "vram_free": ...}


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
    kind: str  # "local", "comfyui", "replicate"
    queue: str  # the Dramatiq queue whose workers run this backend's jobs
    actor_name: str  # the Dramatiq actor (on that queue) that runs one job
    families: tuple[str, ...]
    paid: bool

    def availability(self) -> Availability: ...

    def validate(self, config: TrainingConfig, base_model: BaseModel,
                 total_steps: int | None = None) -> list[dict[str, Any]]:
        """What this backend cannot run, as `[{"loc", "msg"}]`; `total_steps` is the planned count when known."""
        ...

    def estimate_cost(self, config: TrainingConfig, total_steps: int, base_model: BaseModel | None) -> float | None:
        """US dollars a run of `total_steps` would cost; None where the backend is free."""
        ...

    def run(self, job: TrainingJob, reporter: Any) -> RunOutcome: ...

    def cancel(self, job: TrainingJob) -> None: ...

    def logs(self, job: TrainingJob) -> list[str]: ...


# -- remote runs -----------------------------------------------------------------------------------

RUNNING_STATES = ("pending", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class RemoteRun:
    """What the remote side says about one run: its id and one of RUNNING_STATES/FINAL_STATES."""

    remote_id: str
    state: str
    error: str = ""


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    loss: float | None = None
    lr: float | None = None


@dataclass(frozen=True)
class LogLines:
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    state: str  # one of FINAL_STATES
    error: str = ""
    retryable: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"predict_time": 502.7}


@dataclass(frozen=True)
class Waiting:
    """Nothing new yet: lets the driver look at the stop flag and the clock between events."""


RemoteEvent = Progress | LogLines | Finished | Waiting
RecordRemoteId = Callable[[str], None]


class RemoteBackend(TrainingBackend, Protocol):
    def find_run(self, job: TrainingJob, remote_id: str | None) -> RemoteRun | None:
        """The run with `remote_id`, or (without one) a run the remote side tagged with this job's
        uuid; None when the remote side knows no such run."""
        ...

    def submit(self, job: TrainingJob, reporter: Any, record: RecordRemoteId) -> str:
        """Start the run and return its id. `record(remote_id)` must be called as soon as the id is
        known (before the request where the client chooses it), so a dead worker's successor re-attaches."""
        ...

    def follow(self, job: TrainingJob, remote_id: str, reporter: Any) -> Iterator[RemoteEvent]:
        """Events until (and including) one `Finished`; a `Waiting` at least every second or so."""
        ...

    def cancel_run(self, job: TrainingJob, remote_id: str) -> None: ...

    def fetch_weights(self, job: TrainingJob, remote_id: str, target_dir: Path) -> Path:
        """Download the trained LoRA into `target_dir` and return the file (not yet checked)."""
        ...

    def run_cost(self, metrics: dict[str, Any]) -> float | None:
        """What the finished run cost in US dollars, from its metrics; None where free."""
        ...
