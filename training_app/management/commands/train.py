"""`manage.py train --dataset … --preset …`: submit a job and follow it in the terminal."""

from __future__ import annotations

import json
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from datasets_app.models import Dataset
from lorasite.accounts import access
from lorasite.errors import DomainError
from training_app import services
from training_app.models import FINISHED_STATUSES, TrainingJob


class Command(BaseCommand):
    help = "Submit a training job as USER and follow its progress until it ends (Ctrl-C stops following, not the job)."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="dataset UUID, or its name within --team")
        parser.add_argument("--user", required=True, help="who submits (needs member role)")
        parser.add_argument("--team", help="team slug, to find the dataset by name")
        parser.add_argument("--preset", default=None)
        parser.add_argument("--base-model", default="tiny-sd15")
        parser.add_argument("--backend", default="local")
        parser.add_argument("--config", default="{}", help='JSON overrides, e.g. \'{"max_steps": 50}\'')
        parser.add_argument("--name", default=None)
        parser.add_argument("--no-follow", action="store_true")

    def handle(self, *args, **o):
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
        self._follow(job)

    def _dataset_id(self, user, ref: str, team_slug: str | None):
        import uuid

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
        try:
            while True:
                job.refresh_from_db()
                bar.total = job.total_steps or bar.total
                bar.n = job.step
                loss = f"{job.avg_loss:.4f}" if job.avg_loss is not None else "-"
                bar.set_postfix_str(f"{job.status} loss {loss}")
                if job.status in FINISHED_STATUSES:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stdout.write(f"\nstopped following; the job goes on: {job.uuid}")
            return
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
