"""`caption_dataset DATASET --team SLUG --provider NAME [--mode ...]`: caption a dataset from a
terminal, with a progress bar. Runs the run in this process (the same code as the worker)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from datasets_app import caption_runs
from datasets_app.caption_runner import execute_run
from datasets_app.captioning import postprocess
from datasets_app.models import CaptionMode, CaptionRun, Dataset
from lorasite.accounts.access import looks_like_uuid
from lorasite.errors import DomainError


class Command(BaseCommand):
    help = "Auto-caption a dataset with a provider; prints the run id, then a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name or id")
        parser.add_argument("--team", required=True, help="team slug")
        parser.add_argument("--provider", required=True, help="provider name or id")
        parser.add_argument("--mode", default=CaptionMode.UNCAPTIONED, choices=CaptionMode.values)
        parser.add_argument("--prompt", default=None, help="default: the provider's prompt")
        parser.add_argument("--raw", action="store_true", help="no post-processing (default: strip boilerplate, "
                                                               "clean, trigger word first)")
        parser.add_argument("--queue", action="store_true", help="send it to the captioning workers instead of "
                                                                 "running it here")

    def handle(self, *args, dataset, team, provider, mode, prompt, raw, queue, **options):
        lookup = {"uuid": dataset} if looks_like_uuid(dataset) else {"name": dataset}
        found = Dataset.objects.filter(team__slug=team, **lookup).select_related("team").first()
        if found is None:
            raise CommandError(f"No dataset {dataset!r} in team {team!r}.")
        steps = [] if raw else list(postprocess.DEFAULT_STEPS)
        if not found.trigger_word:
            steps = [s for s in steps if s.op != "trigger"]
        try:
            if queue:
                run = caption_runs.start_run(found, None, provider, prompt, mode, steps)
                self.stdout.write(str(run.uuid))
                return
            run = caption_runs.start_run(found, None, provider, prompt, mode, steps, send=False)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(str(run.uuid))
        with tqdm(total=run.total, unit="image", file=self.stderr) as bar:
            execute_run(str(run.uuid), on_change=lambda done, failed, total: bar.update(done + failed - bar.n))
        run = CaptionRun.objects.get(pk=run.pk)
        summary = f"{run.status}: {run.done} captioned, {run.failed} failed of {run.total}"
        if run.error:
            raise CommandError(f"{summary}. {run.error}")
        self.stderr.write(summary)
