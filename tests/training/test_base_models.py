"""`manage.py add_base_model`: a diffusers folder or a single checkpoint becomes a base model jobs
train on; what is not a base model, or not of the family named, is refused with the reason."""

from __future__ import annotations

import hashlib
import json
import shutil
from io import StringIO
from pathlib import Path

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


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_registration_stores_the_sha256_of_the_weights_file(settings):
    from training_app.trainer.single_file import write_single_file_checkpoint

    folder = _tiny_model_dir("sd15")
    out = add("folder-model", "tiny-sd15", "--family", "sd15")
    # A diffusers folder is named by its UNet weights, the file a fine-tune changes.
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert BaseModel.objects.get(name="folder-model").weights_sha256 == _sha256(unet)
    assert f"sha256 {_sha256(unet)}" in out

    checkpoint = write_single_file_checkpoint(folder, settings.LORASITE_MODELS_DIR / "single.safetensors")
    shutil.copytree(folder, settings.LORASITE_MODELS_DIR / "configs" / "sd15", dirs_exist_ok=True)
    add("single-model", checkpoint.name, "--family", "sd15")
    assert BaseModel.objects.get(name="single-model").weights_sha256 == _sha256(checkpoint)


def test_a_job_on_an_unhashed_base_model_hashes_it_once_and_heads_its_lora_with_the_hash(
        member, dataset_a, tiny_base_model):
    from django.conf import settings
    from safetensors import safe_open

    from training_app.models import ArtifactKind
    from training_app.runner import execute_job
    from training_app.services import submit_job

    assert tiny_base_model.weights_sha256 == ""  # registered before hashes were stored
    job = submit_job(member, dataset_id=dataset_a.uuid, base_model="tiny-sd15",
                     config={"resolution": 64, "max_steps": 1, "rank": 4})
    assert execute_job(str(job.uuid)) == JobStatus.COMPLETED
    unet = Path(tiny_base_model.location) / "unet" / "diffusion_pytorch_model.safetensors"
    tiny_base_model.refresh_from_db()
    assert tiny_base_model.weights_sha256 == _sha256(unet)
    job.refresh_from_db()
    kohya = job.artifacts.get(kind=ArtifactKind.LORA_KOHYA)
    with safe_open(str(settings.MEDIA_ROOT / kohya.path), "pt") as handle:
        meta = handle.metadata()
    assert meta["ss_new_sd_model_hash"] == tiny_base_model.weights_sha256
    assert meta["ss_sd_model_hash"] == hashlib.sha256(unet.read_bytes()[0x100000:0x110000]).hexdigest()[:8]
    assert (meta["modelspec.author"], meta["modelspec.description"]) == (job.team.name, job.name)
