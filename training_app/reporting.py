"""The job reporter: turns a backend's step, log, sample and file callbacks into rows and websocket messages.

The database stays the source of truth, written at a bounded rate (every `db_interval` seconds);
websocket progress is published at most `publish_interval` apart (10 a second by default) and the
final figures are always sent, so a client never ends on a stale step. Each progress message carries
the loss points of every step since the previous one, so a live chart misses none. Before training,
the phase (loading model, caching latents n/N, ...) is kept on the job row, logged and published.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from lorasite.realtime import job_group, publish, team_group
from training_app import eta
from training_app.artifacts import (
    LORA_ARTIFACT_KINDS,
    artifact_url,
    media_relative,
    record_artifact,
    store_sample,
)
from training_app.charts import downsample
from training_app.models import ArtifactKind, JobLog, JobStatus, LossPoint, TrainingJob

logger = logging.getLogger(__name__)

MAX_LOG_LINES = 2000
AVG_WINDOW = 50
# Points one progress message carries at most (a very fast run is thinned, keeping its shape).
LIVE_POINTS_PER_MESSAGE = 300


def progress_payload(job: TrainingJob) -> dict[str, Any]:
    return {
        "type": "progress", "job": str(job.uuid), "step": job.step, "total_steps": job.total_steps,
        "loss": job.loss, "avg_loss": job.avg_loss, "lr": job.lr, "eta_seconds": job.eta_seconds,
        "percent": job.percent,
    }


def status_payload(job: TrainingJob) -> dict[str, Any]:
    return {"type": "status", "job": str(job.uuid), "status": job.status, "error": job.error or None,
            "attempts": job.attempts}


def phase_label(phase: dict[str, Any]) -> str:
    """'caching latents 3/8', 'loading model'; '' for no phase. The page shows this text as is."""
    name = phase.get("name") or ""
    total = phase.get("total") or 0
    return f"{name} {phase.get('done') or 0}/{total}" if name and total else name


def phase_state(job: TrainingJob) -> dict[str, Any]:
    """The job's phase as pages and the websocket snapshot get it, label included."""
    phase = job.phase or {}
    return {"name": phase.get("name", ""), "done": phase.get("done", 0), "total": phase.get("total", 0),
            "label": phase_label(phase)}


def publish_to_job_and_team(job: TrainingJob, payload: dict[str, Any]) -> None:
    publish(job_group(job.uuid), payload)
    publish(team_group(job.team.uuid), payload)


def publish_status(job: TrainingJob) -> None:
    publish_to_job_and_team(job, status_payload(job))


class JobReporter:
    """The trainer's Reporter for one job run by one worker."""

    def __init__(self, job: TrainingJob, worker_id: str, *, publish_interval: float = 0.1,
                 db_interval: float = 1.0, control_interval: float = 0.5, clock=time.monotonic):
        self.job = job
        self.worker_id = worker_id
        self.publish_interval = publish_interval
        self.db_interval = db_interval
        self.control_interval = control_interval
        self.clock = clock
        self._first_step: int | None = None
        self._last_publish = -1e9
        self._last_db = clock()
        self._last_control = -1e9
        self._last_phase_publish = -1e9
        self._pace = eta.StepPace()
        self._pending_points: list[LossPoint] = []
        self._unpublished_points: list[list[float]] = []
        self._drop_points_from: int | None = None
        self._pending_logs: list[JobLog] = []
        self._window: deque[float] = deque(maxlen=AVG_WINDOW)
        self._stop = False
        self.taken_over = False  # the job is no longer this worker's (not a cancel: leave the remote run alone)
        self._actions: frozenset[str] = frozenset()
        self._dirty = False
        self._phase_dirty = False
        self._lora_files: dict[str, Path] = {}
        self.published_progress = 0

    # -- trainer callbacks -------------------------------------------------------------------
    def phase(self, name: str, done: int = 0, total: int = 0) -> None:
        """Kept on the job row (a page that connects later sees it), logged when it starts, published
        at the progress rate; the start and the end of a phase are always written and sent."""
        now = self.clock()
        job = self.job
        started = (job.phase or {}).get("name") != name
        job.phase = {"name": name, "done": int(done), "total": int(total)}
        self._phase_dirty = True
        if started:
            self.log(f"{phase_label(job.phase)}…")
        boundary = started or (total and done >= total)
        if boundary or now - self._last_phase_publish >= self.publish_interval:
            self._last_phase_publish = now
            publish(job_group(job.uuid), {"type": "phase", "job": str(job.uuid), **phase_state(job)})
        if boundary or now - self._last_db >= self.db_interval:
            self.flush()

    def step(self, step: int, total_steps: int, loss: float, lr: float) -> None:
        now = self.clock()
        if self._first_step is None:
            self._first_step = step
            # Points from this step on were drawn by a dead attempt past its last checkpoint.
            self._drop_points_from = step
        job = self.job
        self._window.append(float(loss))
        job.step, job.total_steps, job.loss, job.lr = step, total_steps, float(loss), float(lr)
        job.avg_loss = sum(self._window) / len(self._window)
        # A resumed run starts mid-way: the ETA follows this run's own pace, smoothed (see eta.py).
        self._pace = eta.advance_pace(self._pace, step, now)
        job.eta_seconds = eta.eta_seconds(self._pace, total_steps)
        self._pending_points.append(LossPoint(job=job, step=step, loss=float(loss), lr=float(lr), at=timezone.now()))
        self._unpublished_points.append([step, float(loss), float(lr)])
        self._dirty = True
        if now - self._last_db >= self.db_interval:
            self.flush()
        if now - self._last_publish >= self.publish_interval or step == total_steps:
            self._publish_progress(now)

    def progress(self, step: int, total_steps: int) -> None:
        """A step count without a loss (remote trainers that report only how far they are)."""
        now = self.clock()
        job = self.job
        job.step, job.total_steps = step, total_steps
        # The same smoothing as local steps; several steps per report count as that many.
        self._pace = eta.advance_pace(self._pace, step, now)
        job.eta_seconds = eta.eta_seconds(self._pace, total_steps)
        self._dirty = True
        # Published before the database write: a remote step is already late by the network hop.
        if now - self._last_publish >= self.publish_interval or step == total_steps:
            self._publish_progress(now)
        if now - self._last_db >= self.db_interval:
            self.flush()

    def log(self, line: str) -> None:
        line = str(line)[:2000]
        self._pending_logs.append(JobLog(job=self.job, line=line, at=timezone.now()))
        # Log lines go to the job page only; the team dashboard shows progress and status.
        publish(job_group(self.job.uuid), {"type": "log", "job": str(self.job.uuid), "line": line})

    def sample(self, step: int, prompt: str, path: Path) -> None:
        artifact = store_sample(self.job, step, prompt, path)
        publish_to_job_and_team(self.job, {"type": "sample", "job": str(self.job.uuid), "step": step,
                                           "url": artifact_url(artifact), "prompt": artifact.prompt})

    def checkpoint(self, step: int, path: Path) -> None:
        self.flush()
        relative = media_relative(Path(path))
        TrainingJob.objects.filter(pk=self.job.pk).update(checkpoint_path=relative)
        self.job.checkpoint_path = relative
        record_artifact(self.job, ArtifactKind.CHECKPOINT, Path(path), step=step, replace=True)
        self.log(f"checkpoint saved at step {step}")

    def lora_saved(self, kind: str, path: Path, step: int) -> None:
        """The trainer (re)wrote a LoRA file: offer it at once, so a "save now" is downloadable mid-run."""
        self._record_lora(LORA_ARTIFACT_KINDS[kind], Path(path), step)

    def record_lora_files(self, step: int, files: dict[str, Path]) -> None:
        """Register the LoRA files a backend's run produced, unless `lora_saved` already offered them."""
        for kind, path in files.items():
            if self._lora_files.get(kind) != Path(path):
                self._record_lora(kind, Path(path), step)

    def _record_lora(self, kind: str, path: Path, step: int) -> None:
        self._lora_files[kind] = path
        artifact = record_artifact(self.job, kind, path, step=step, replace=True)
        publish(job_group(self.job.uuid), {"type": "artifact", "job": str(self.job.uuid), "kind": kind,
                                           "url": artifact_url(artifact)})

    def should_stop(self) -> bool:
        self._poll_control()
        return self._stop

    def pending_actions(self) -> frozenset[str]:
        self._poll_control()
        actions, self._actions = self._actions, frozenset()
        return actions

    # -- runner helpers ----------------------------------------------------------------------
    def flush(self) -> None:
        """Write progress, loss points and logs; refresh the heartbeat while at it."""
        job = self.job
        with transaction.atomic():
            if self._dirty or self._phase_dirty:
                TrainingJob.objects.filter(pk=job.pk, worker_id=self.worker_id).update(
                    step=job.step, total_steps=job.total_steps, loss=job.loss, avg_loss=job.avg_loss, lr=job.lr,
                    eta_seconds=job.eta_seconds, phase=job.phase, heartbeat_at=timezone.now(),
                )
            if self._drop_points_from is not None:
                LossPoint.objects.filter(job=job, step__gte=self._drop_points_from).delete()
                self._drop_points_from = None
            if self._pending_points:
                LossPoint.objects.bulk_create(self._pending_points)
            if self._pending_logs:
                JobLog.objects.bulk_create(self._pending_logs)
                _trim_logs(job)
        self._pending_points, self._pending_logs, self._dirty, self._phase_dirty = [], [], False, False
        self._last_db = self.clock()

    def tick(self) -> None:
        """Between a remote run's events: write what is due, so a run that pauses (or only logs) does not
        leave its last step and lines unwritten until the next step."""
        if (self._dirty or self._pending_logs or self._pending_points) and \
                self.clock() - self._last_db >= self.db_interval:
            self.flush()

    def finish(self) -> None:
        """Write and publish the last figures, whatever the throttles say."""
        self.flush()
        self._publish_progress(self.clock())

    def _publish_progress(self, now: float) -> None:
        self._last_publish = now
        self.published_progress += 1
        payload = progress_payload(self.job)
        # The dashboard shows the figures; only the job page draws the curve.
        publish(team_group(self.job.team.uuid), payload)
        points = downsample(self._unpublished_points, LIVE_POINTS_PER_MESSAGE, lambda p: p[1])
        self._unpublished_points = []
        publish(job_group(self.job.uuid), {**payload, "points": points})

    def _poll_control(self) -> None:
        now = self.clock()
        if now - self._last_control < self.control_interval:
            return
        self._last_control = now
        row = TrainingJob.objects.filter(pk=self.job.pk).values("status", "worker_id", "requested_actions").first()
        if row is None or row["worker_id"] != self.worker_id or row["status"] not in (
            JobStatus.RUNNING, JobStatus.CANCELLING
        ):
            # Deleted, or the reaper gave the job to someone else: this worker must stop.
            self._stop = True
            self.taken_over = True
            return
        if row["status"] == JobStatus.CANCELLING:
            self._stop = True
        if row["requested_actions"]:
            taken = TrainingJob.objects.filter(pk=self.job.pk, requested_actions=row["requested_actions"]).update(
                requested_actions=[]
            )
            if taken:
                self._actions = self._actions | frozenset(row["requested_actions"])


def _trim_logs(job: TrainingJob) -> None:
    cutoff = JobLog.objects.filter(job=job).order_by("-id").values_list("id", flat=True)[MAX_LOG_LINES:MAX_LOG_LINES + 1]
    cutoff = list(cutoff)
    if cutoff:
        JobLog.objects.filter(job=job, id__lte=cutoff[0]).delete()
