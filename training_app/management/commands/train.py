"""`manage.py train --dataset … --preset …`: submit a job and follow it in the terminal.

In embedded mode the in-process broker reaches no other process: a running `manage.py serve`
picks the job up through its reconciler within seconds; with no server, the job trains here."""

from __future__ import annotations

import json
import time
import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from datasets_app.models import Dataset
from lorasite.accounts import access
from lorasite.broker import is_embedded, start_embedded_worker
from lorasite.core.workers import live_workers, worker_name
from lorasite.errors import DomainError
from training_app import lifecycle, services
from training_app.backends.registry import actor_for
from training_app.dispatch import waiting_reason
from training_app.models import FINISHED_STATUSES, JobStatus, TrainingJob


class Command(BaseCommand):
    help = ("Submit a training job as USER and follow its progress until it ends, or follow a job "
            "submitted elsewhere (--follow JOB).")

    def add_arguments(self, parser):
        parser.add_argument("--dataset", help="dataset UUID, or its name within --team")
        parser.add_argument("--user", help="who submits (needs member role)")
        parser.add_argument("--team", help="team slug, to find the dataset by name")
        parser.add_argument("--preset", default=None)
        parser.add_argument("--base-model", default="tiny-sd15")
        parser.add_argument("--backend", default="local")
        parser.add_argument("--config", default="{}", help='JSON overrides, e.g. \'{"max_steps": 50}\'')
        parser.add_argument("--name", default=None)
        parser.add_argument("--no-follow", action="store_true")
        parser.add_argument("--follow", metavar="JOB", help="follow this job (its UUID) instead of submitting one")

    def handle(self, *args, **o):
        self.worker = None
        if o["follow"]:
            return self._follow_existing(o["follow"])
        if not o["dataset"] or not o["user"]:
            raise CommandError("--dataset and --user are needed to submit a job (or --follow JOB to watch one)")
        user = get_user_model().objects.filter(username=o["user"]).first()
        if user is None:
            raise CommandError(f"no user called {o['user']!r}")
        try:
            overrides = json.loads(o["config"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not valid JSON: {exc}") from None
        try:
            dataset_id = self._dataset_id(user, o["dataset"], o["team"])
            job = services.submit_job(user, dataset_id=dataset_id, base_model=o["base_model"], backend=o["backend"],
                                      preset=o["preset"], config=overrides, name=o["name"])
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"submitted job {job.uuid} ({job.total_steps} steps)")
        if o["no_follow"]:
            return
        self._see_it_through(job)

    def _follow_existing(self, ref: str) -> None:
        try:
            job = TrainingJob.objects.get(uuid=uuid.UUID(ref))
        except (ValueError, TrainingJob.DoesNotExist):
            raise CommandError(f"no job {ref!r}") from None
        self.stdout.write(f"following job {job.uuid} ({job.status}, {job.total_steps} steps)")
        self._see_it_through(job)

    def _see_it_through(self, job: TrainingJob) -> None:
        try:
            if is_embedded() and job.status == JobStatus.QUEUED and not self._embedded_worker_elsewhere(job):
                self._train_here(job, "no worker is running")
            self._follow(job)
        finally:
            if self.worker is not None:
                self.worker.stop()

    def _embedded_worker_elsewhere(self, job: TrainingJob) -> bool:
        others = [w for w in live_workers(actor_for(job.backend).queue_name) if w.name != worker_name()]
        if others:
            self.stdout.write(f"the embedded worker of {others[0].name} takes it within a few seconds")
        return bool(others)

    def _train_here(self, job: TrainingJob, why: str) -> None:
        self.stdout.write(f"{why}: training in this process (Ctrl-C cancels the job and keeps its last checkpoint)")
        # The job's message is already in this process's broker; these threads consume it.
        self.worker = start_embedded_worker((actor_for(job.backend).queue_name, "default"), threads=1)

    def _unclaimed_too_long(self, job: TrainingJob) -> bool:
        """A server that just stopped still looks alive for a while: if nobody claimed the job in
        the time a live server's reconciler needs, run it here."""
        patience = settings.JOB_RECONCILE_GRACE_SECONDS + 3 * settings.JOB_RECONCILE_SECONDS + 5
        return (is_embedded() and self.worker is None and job.status == JobStatus.QUEUED and job.attempts == 0
                and (time.time() - job.queued_at.timestamp()) > patience)

    def _dataset_id(self, user, ref: str, team_slug: str | None):
        try:
            return uuid.UUID(ref)
        except ValueError:
            pass
        team = access.get_team(user, team_slug)
        dataset = Dataset.objects.filter(team=team, name=ref).first()
        if dataset is None:
            raise CommandError(f"no dataset called {ref!r} in team {team.slug}")
        return dataset.uuid

    def _follow(self, job: TrainingJob) -> None:
        from tqdm import tqdm

        bar = tqdm(total=job.total_steps or 1, unit="step", dynamic_ncols=True, file=self.stdout)
        said = None
        try:
            while True:
                job.refresh_from_db()
                if self._unclaimed_too_long(job):
                    self._train_here(job, "no worker took the job")
                reason = None if self.worker else waiting_reason(job)
                if reason and reason != said:
                    bar.write(f"queued: {reason}")
                said = reason or said
                bar.total = job.total_steps or bar.total
                bar.n = job.step
                loss = f"{job.avg_loss:.4f}" if job.avg_loss is not None else "-"
                bar.set_postfix_str(f"{job.status} loss {loss}")
                if job.status in FINISHED_STATUSES:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            if self.worker is None:
                self.stdout.write(f"\nstopped following; the job goes on: {job.uuid}")
                return
            self._cancel_here(job)
        finally:
            bar.close()
        self.stdout.write(f"job {job.uuid} {job.status}" + (f": {job.error}" if job.error else ""))
        if job.status == "completed":
            for artifact in job.artifacts.filter(kind__startswith="lora"):
                self.stdout.write(f"{artifact.kind}: /api/jobs/{job.uuid}/weights?layout="
                                  f"{'kohya' if artifact.kind == 'lora_kohya' else 'diffusers'} "
                                  f"({artifact.size_bytes} bytes, sha256 {artifact.sha256[:12]}…)")
        if job.status != "completed":
            raise CommandError(f"job ended {job.status}")

    def _cancel_here(self, job: TrainingJob) -> None:
        """The job runs in this process, which is about to end: stop it cleanly (checkpoint + LoRA)."""
        self.stdout.write("\ncancelling: saving the LoRA and a checkpoint (Retry resumes it) ...")
        try:
            lifecycle.request_cancel(job.pk)
        except lifecycle.IllegalTransition:
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job.refresh_from_db()
            if job.status in FINISHED_STATUSES:
                break
            time.sleep(0.2)
