"""Find running jobs whose worker died (stale heartbeat) and re-send queued jobs whose message was lost."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from training_app.dispatch import reap_lost_jobs, reconcile_queued_jobs


class Command(BaseCommand):
    help = "Re-queue (or fail) jobs with a stale heartbeat; re-send queued jobs whose message was lost."

    def add_arguments(self, parser):
        parser.add_argument("--stale-after", type=float, default=None, help="seconds without heartbeat (default: setting)")
        parser.add_argument("--max-attempts", type=int, default=None)

    def handle(self, *args, stale_after, max_attempts, **options):
        counts = reap_lost_jobs(stale_after=stale_after, max_attempts=max_attempts)
        resent = reconcile_queued_jobs()
        self.stdout.write(f"requeued {counts['requeued']}, failed {counts['failed']}, "
                          f"cancelled {counts['cancelled']}, re-sent {resent}")
