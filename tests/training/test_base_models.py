"""`manage.py add_base_model`: a diffusers folder or a single checkpoint becomes a base model jobs
train on; what is not a base model, or not of the family named, is refused with the reason."""

from __future__ import annotations

import json
import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from lorasite.broker import get_broker
from tests.conftest import _tiny_model_dir
from training_app.models import BaseModel, JobStatus, TrainingJob

pytestmark = pytest.mark.django_db(transaction=True)


def add(*args):
    out = StringIO()
    call_command("add_base_model", *args, stdout=out)
    return out.getvalue()


def test_a_diffusers_folder_under_the_models_dir_is_registered_by_its_relative_path(settings):
    _tiny_model_dir("sdxl")
    assert add("my-xl", "tiny-sdxl", "--family", "sdxl").startswith("my-xl: sdxl at ")
    model = BaseModel.objects.get(name="my-xl")
    assert (model.family, model.location, model.team) == ("sdxl", "tiny-sdxl", None)


def test_what_is_not_a_base_model_of_that_family_is_refused(settings, tmp_path):
    _tiny_model_dir("sdxl")
    with pytest.raises(CommandError, match="holds an sdxl model, not sd15"):
        add("wrong", "tiny-sdxl", "--family", "sd15")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CommandError, match=r"a diffusers folder or a \.safetensors/\.ckpt file"):
        add("notes", str(tmp_path / "notes.txt"), "--family", "sd15")
    with pytest.raises(CommandError, match="does not exist"):
        add("gone", "no-such-folder", "--family", "sd15")
    with pytest.raises(CommandError, match="letters, digits"):
        add("bad name", "tiny-sdxl", "--family", "sdxl")
    assert not BaseModel.objects.exists()


def test_a_single_checkpoint_needs_a_config_folder_then_trains(settings, member, dataset_a):
    from training_app.trainer.single_file import write_single_file_checkpoint

    folder = _tiny_model_dir("sd15")
    checkpoint = write_single_file_checkpoint(folder, settings.LORASITE_MODELS_DIR / "mine.safetensors")
    with pytest.raises(CommandError, match="needs the configs and tokenizers of a diffusers sd15 folder"):
        add("mine", "mine.safetensors", "--family", "sd15")
    shutil.copytree(folder, settings.LORASITE_MODELS_DIR / "configs" / "sd15", dirs_exist_ok=True)
    add("mine", checkpoint.name, "--family", "sd15")

    get_broker().flush_all()
    call_command("train", "--dataset", "shapes", "--team", "alpha", "--user", "mia", "--base-model", "mine",
                 "--config", json.dumps({"resolution": 64, "max_steps": 3}), stdout=StringIO())
    job = TrainingJob.objects.get()
    assert job.status == JobStatus.COMPLETED, job.error
    assert job.base_model.name == "mine"
