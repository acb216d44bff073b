"""Entry module for worker processes: `dramatiq lorasite.worker --queues gpu --processes 1`.

Importing it sets Django up, which installs the broker from the environment and registers every
app's actors (see CoreConfig.ready).
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lorasite.settings")
django.setup()

from lorasite.broker import get_broker  # noqa: E402

broker = get_broker()
