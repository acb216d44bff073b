"""Serve the portal with daphne; in embedded mode also run the Dramatiq worker threads in-process."""

from __future__ import annotations

import asyncio
import os

from django.conf import settings
from django.core.management.base import BaseCommand

from lorasite.broker import QUEUES, is_embedded, start_embedded_worker
from lorasite.realtime import register_embedded_loop


class Command(BaseCommand):
    help = "Run daphne on HOST:PORT; with the embedded (stub) broker, start worker threads too."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-worker", action="store_true", help="do not start embedded worker threads")

    def handle(self, *args, host, port, no_worker, **options):
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from lorasite.asgi import application

        worker = None
        if is_embedded() and not no_worker:
            worker = start_embedded_worker(QUEUES, settings.EMBEDDED_WORKER_THREADS)
            self.stdout.write(f"embedded worker: {settings.EMBEDDED_WORKER_THREADS} threads on {', '.join(QUEUES)}")

        def ready() -> None:
            register_embedded_loop(asyncio.get_event_loop())
            self.stdout.write(self.style.SUCCESS(f"lorasite is serving on http://{host}:{port}/"))

        try:
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                ready_callable=ready,
                signal_handlers=True,
            ).run()
        finally:
            register_embedded_loop(None)
            if worker is not None:
                worker.stop()
