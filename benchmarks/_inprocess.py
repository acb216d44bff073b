"""Shared set-up for the benchmarks that run Django in their own process (ingest, images_api,
dashboard): a temporary var/ and media folder, the stub broker, and a migrated database (SQLite
under the temporary folder, or whatever DATABASE_URL names)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_django(name: str, client_host: bool = False) -> Path:
    """Configure, set up and migrate Django for benchmark `name`; returns the temporary folder."""
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix=f"lorasite-bench-{name}-"))
    os.environ.setdefault("LORASITE_VAR_DIR", str(work / "var"))
    os.environ["MEDIA_ROOT"] = str(work / "media")
    if client_host:
        os.environ["ALLOWED_HOSTS"] = "testserver"  # Django's in-process test client
    os.environ.setdefault("LORASITE_BROKER", "stub")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lorasite.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    return work
