"""Test settings: Postgres when it is reachable (always in CI), the stub broker, in-memory channels.

Chosen in the pytest config, because the broker is picked when the apps load (see lorasite/broker.py).
Tests that need Redis or a second process start those themselves with production-style environments.
"""

from __future__ import annotations

import getpass
import os
import socket
import tempfile
from pathlib import Path

_RUN_DIR = Path(tempfile.mkdtemp(prefix="lorasite-tests-"))
os.environ["LORASITE_BROKER"] = "stub"
os.environ.pop("REDIS_URL", None)
os.environ.pop("RABBITMQ_URL", None)
os.environ.pop("DATABASE_URL", None)
os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")
os.environ["LORASITE_VAR_DIR"] = str(_RUN_DIR / "var")
os.environ["MEDIA_ROOT"] = str(_RUN_DIR / "media")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lorasite.settings import *  # noqa: E402,F403


def _postgres_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
_choice = os.environ.get("LORASITE_TEST_DATABASE", "auto")
IN_CI = os.environ.get("CI", "").lower() == "true"

if _choice == "postgres" or (_choice == "auto" and (IN_CI or _postgres_reachable(PG_HOST, PG_PORT))):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "lorasite",
            "HOST": PG_HOST,
            "PORT": PG_PORT,
            "USER": os.environ.get("TEST_PG_USER") or getpass.getuser(),
            # Each pytest run gets its own database name so parallel runs do not collide.
            "TEST": {"NAME": f"test_lorasite_{os.getpid()}"},
        }
    }
else:
    # A file, not :memory:, so that worker and daphne subprocesses see the same data.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _RUN_DIR / "db.sqlite3",
            "OPTIONS": {"timeout": 20},
            "TEST": {"NAME": str(_RUN_DIR / "test-db.sqlite3")},
        }
    }

TEST_RUN_DIR = _RUN_DIR
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
SERVE_STATIC = True
# Every test client signs in from 127.0.0.1: the throttling tests set their own limit.
AUTH_FAILURES_PER_MINUTE = 1000
