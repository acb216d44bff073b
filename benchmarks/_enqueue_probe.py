"""The production web and worker entry points plus one Dramatiq middleware that records, in Redis,
every message the process hands to the broker: `benchmarks/submit_burst.py` starts
`daphne _enqueue_probe:application` and `dramatiq _enqueue_probe` (benchmarks/ on PYTHONPATH), so
the messages it counts are the ones every sending process really enqueued, not a number inferred
from the job rows.
"""

from __future__ import annotations

import json
import os
import time

from dramatiq.middleware import Middleware

import lorasite.worker  # noqa: F401  sets Django up and installs the broker from the environment
from lorasite.broker import get_broker


class EnqueueProbe(Middleware):
    """After the broker accepted a message (Redis has it), append who sent what to the log list."""

    def __init__(self, client, key: str) -> None:
        self.client, self.key = client, key

    def after_enqueue(self, broker, message, delay) -> None:
        self.client.rpush(self.key, json.dumps({
            "pid": os.getpid(), "queue": message.queue_name, "actor": message.actor_name,
            "args": list(message.args), "message_id": message.message_id, "at": time.time()}))


broker = get_broker()
# A Redis list (one JSON entry a message) named by the benchmark, in its own namespace.
broker.add_middleware(EnqueueProbe(broker.client, os.environ["BENCH_ENQUEUE_LOG"]))

from lorasite.asgi import application  # noqa: E402,F401  what daphne serves; the worker ignores it
