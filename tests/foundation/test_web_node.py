"""A web node runs without the `train` extra: nothing it loads imports torch or the diffusion stack."""

from __future__ import annotations

import subprocess
import sys

from tests.services import REPO

PROBE = """
import os, sys
HEAVY = {"torch", "diffusers", "peft", "transformers", "safetensors", "accelerate"}

class Refuse:
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"a web node imported {name}")

sys.meta_path.insert(0, Refuse())
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
import lorasite.asgi, lorasite.urls, lorasite.worker, training_app.views, training_app.api, datasets_app.api
from django.test import Client
from django.urls import reverse
print("ok", reverse("healthz"))
"""


def test_web_process_modules_import_without_the_training_stack():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok /healthz"
