"""`manage.py train` submits a job and follows it to the end in the terminal."""

from __future__ import annotations

import hashlib
import json
from io import StringIO

import dramatiq
import pytest
from django.core.management import CommandError, call_command

from lorasite.broker import get_broker
from training_app.models import JobStatus, TrainingJob

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker():
    broker = get_broker()
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    yield worker
    worker.stop()


def test_train_follows_the_job_to_completion(worker, member, dataset_a, tiny_base_model):
    out = StringIO()
    call_command("train", "--dataset", "shapes", "--team", "alpha", "--user", "mia", "--preset", "fast",
                 "--config", json.dumps({"resolution": 64, "max_steps": 10}), stdout=out)
    text = out.getvalue()
    job = TrainingJob.objects.get()
    assert job.status == JobStatus.COMPLETED
    assert f"submitted job {job.uuid} (10 steps)" in text
    assert f"job {job.uuid} completed" in text
    assert "/weights?layout=kohya" in text and "/weights?layout=diffusers" in text


def test_train_reports_bad_settings_and_unknown_datasets(member, dataset_a, tiny_base_model):
    with pytest.raises(CommandError, match="rank must be one of"):
        call_command("train", "--dataset", str(dataset_a.uuid), "--user", "mia", "--config", '{"rank": 3}',
                     stdout=StringIO())
    with pytest.raises(CommandError, match="no dataset called 'nope'"):
        call_command("train", "--dataset", "nope", "--team", "alpha", "--user", "mia", stdout=StringIO())
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("train", "--dataset", "shapes", "--user", "mia", "--config", "{", stdout=StringIO())
    assert not TrainingJob.objects.exists()


def test_make_tiny_model_builds_and_registers_both_families(settings, tmp_path):
    from training_app.models import BaseModel

    settings.LORASITE_MODELS_DIR = tmp_path
    out = StringIO()
    call_command("make_tiny_model", stdout=out)
    assert (tmp_path / "tiny-sd15" / "model_index.json").is_file()
    assert (tmp_path / "tiny-sdxl" / "unet" / "config.json").is_file()
    assert dict(BaseModel.objects.values_list("name", "family")) == {"tiny-sd15": "sd15", "tiny-sdxl": "sdxl"}
    for name in ("tiny-sd15", "tiny-sdxl"):
        unet = (tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
        assert BaseModel.objects.get(name=name).weights_sha256 == hashlib.sha256(unet).hexdigest()
    call_command("make_tiny_model", stdout=StringIO())  # again: nothing rebuilt, nothing duplicated
    assert BaseModel.objects.count() == 2


def test_train_with_no_worker_anywhere_trains_in_its_own_process(member, dataset_a, tiny_base_model):
    import os

    get_broker().flush_all()
    out = StringIO()
    call_command("train", "--dataset", "shapes", "--team", "alpha", "--user", "mia", "--preset", "fast",
                 "--config", json.dumps({"resolution": 64, "max_steps": 5}), stdout=out)
    job = TrainingJob.objects.get()
    assert job.status == JobStatus.COMPLETED, job.error
    assert "no worker is running: training in this process" in out.getvalue()
    assert job.worker_id.split(":")[1] == str(os.getpid())
