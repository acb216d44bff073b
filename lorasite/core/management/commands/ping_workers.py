"""Tell an operator which Dramatiq queues have a worker that answers."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from lorasite.broker import QUEUES
from lorasite.core.models import WorkerProbe
from lorasite.core.tasks import send_probe


class Command(BaseCommand):
    help = "Send a probe to each queue and report which ones a worker answers within the timeout."

    def add_arguments(self, parser):
        parser.add_argument("--queue", action="append", choices=QUEUES, help="queue to probe (repeatable)")
        parser.add_argument("--timeout", type=float, default=10.0)

    def handle(self, *args, **options):
        queues = options["queue"] or list(QUEUES)
        probes = {send_probe(queue): queue for queue in queues}
        deadline = time.monotonic() + options["timeout"]
        answered: dict[str, str] = {}
        while time.monotonic() < deadline and len(answered) < len(probes):
            for probe in WorkerProbe.objects.filter(id__in=probes, answered_at__isnull=False):
                answered[probes[str(probe.id)]] = probe.answered_by
            time.sleep(0.2)
        for queue in queues:
            who = answered.get(queue)
            self.stdout.write(f"{queue}: {'answered by ' + who if who else 'no answer'}")
        if len(answered) < len(probes):
            raise CommandError("some queues have no worker answering")
