"""The Python client and the example scripts against a real portal: `manage.py serve` (daphne with its
in-process worker) on this run's Postgres, a seeded team, an API token and the tiny generated model.

The examples run as subprocesses with only LORASITE_URL and LORASITE_TOKEN to go on; the tests read
what they printed and what the portal stored. The reconnect test runs daphne and a Dramatiq worker as
separate processes (on Redis), so daphne can be restarted under a live job.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from safetensors import safe_open

from datasets_app.models import Dataset, ReviewState
from lorasite.accounts.models import ApiToken
from lorasite_client import (
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from tests.conftest import draw_png, make_dataset
from tests.services import (
    REPO,
    bin_path,
    free_port,
    production_env,
    serve_portal,
    stop_process,
    wait_for_port,
)
from training_app.models import ArtifactKind, JobStatus, TrainingJob
from training_app.presets import PRESETS

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FAST_CONFIG = '{"resolution": 64, "max_steps": 6, "rank": 4}'


@pytest.fixture
def portal_url(settings, tiny_base_model):
    env = production_env(LORASITE_MODELS_DIR=str(settings.LORASITE_MODELS_DIR), OMP_NUM_THREADS="1",
                         ALLOWED_HOSTS="127.0.0.1")
    env.pop("REDIS_URL", None)
    env.pop("RABBITMQ_URL", None)
    with serve_portal(env) as portal:
        yield portal.url
    assert "Traceback" not in portal.log, portal.log


@pytest.fixture
def token(member):
    return ApiToken.issue(member, "scripts")[1]


@pytest.fixture
def client(portal_url, token):
    with Client(portal_url, token) as portal:
        yield portal


def run_example(name: str, url: str, token: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # Nothing of Django's reaches the script: it must work from the environment a user's shell has.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PYTEST", "LORASITE"))}
    env.update(LORASITE_URL=url, LORASITE_TOKEN=token, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(REPO / "examples" / name), *args], env=env, cwd=cwd or REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def draw_folder(folder: Path, count: int = 4) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"shape{i}.png").write_bytes(draw_png(i))
        (folder / f"shape{i}.txt").write_text(f"shp, a drawn square number {i}")
    return folder


def draw_zip(path: Path) -> Path:
    """Five images with messy captions in a kohya folder, one exact copy and one enlarged (near) copy."""
    from PIL import Image

    with zipfile.ZipFile(path, "w") as archive:
        for i in range(5):
            archive.writestr(f"10_shp/sq{i}.png", draw_png(i))
            archive.writestr(f"10_shp/sq{i}.txt", f"  a   square,  number {i} ")
        archive.writestr("10_shp/sq0-copy.png", draw_png(0))
        big = io.BytesIO()
        Image.open(io.BytesIO(draw_png(0))).resize((96, 96)).save(big, format="PNG")
        archive.writestr("10_shp/sq0-big.png", big.getvalue())
    return path


def test_client_imports_with_neither_django_nor_torch():
    code = ("import sys, lorasite_client; bad = [m for m in ('django', 'torch', 'lorasite', 'pydantic') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stdout + result.stderr


def test_basic_training_example_turns_a_folder_into_a_lora_on_disk(portal_url, token, tmp_path):
    folder = draw_folder(tmp_path / "shots")
    out = tmp_path / "loras"
    result = run_example("basic_training.py", portal_url, token, str(folder), "--config", FAST_CONFIG,
                         "--out", f"{out}/")
    lines = result.stdout.splitlines()
    assert any(line.endswith("4 images added, 0 duplicates, 0 rejected") for line in lines), result.stdout
    assert "step 6/6" in result.stdout and "status completed" in lines
    saved = list(out.iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".safetensors"
    with safe_open(str(saved[0]), framework="pt") as weights:
        assert any("lora" in key for key in weights.keys())
        assert weights.metadata()["ss_network_dim"] == "4"

    dataset = Dataset.objects.get(name="shots")
    assert sorted(dataset.images.values_list("caption", flat=True)) == [
        f"shp, a drawn square number {i}" for i in range(4)]
    job = TrainingJob.objects.get(dataset=dataset)
    assert job.status == JobStatus.COMPLETED and job.step == 6
    stored = job.artifacts.get(kind=ArtifactKind.LORA_KOHYA)
    from django.conf import settings

    on_server = Path(settings.MEDIA_ROOT) / stored.path
    assert hashlib.sha256(on_server.read_bytes()).hexdigest() == hashlib.sha256(saved[0].read_bytes()).hexdigest()


def test_dataset_management_example_imports_reviews_cleans_and_exports(portal_url, token, tmp_path):
    archive = draw_zip(tmp_path / "shots.zip")
    result = run_example("dataset_management.py", portal_url, token, str(archive), "--name", "managed",
                         "--trigger", "shp", "--out", f"{tmp_path}/export/")
    out = result.stdout
    assert "6 added, 1 exact duplicates, 0 rejected" in out
    assert "exact duplicate skipped: shots.zip/10_shp/sq0-copy.png" in out
    assert "near-duplicates: sq0.png ~ sq0-big.png" in out
    assert "caption tool add_trigger: 6 captions changed" in out
    assert "approved 5 images" in out

    dataset = Dataset.objects.get(name="managed")
    images = {image.original_name: image for image in dataset.images.all()}
    assert len(images) == 6 and images["sq0-big.png"].review_state == ReviewState.REJECTED
    assert all(i.review_state == ReviewState.APPROVED for n, i in images.items() if n != "sq0-big.png")
    assert images["sq3.png"].caption == "shp, a square, number 3"
    assert images["sq3.png"].repeats == 10

    (export,) = (tmp_path / "export").iterdir()
    with zipfile.ZipFile(export) as exported:
        names = exported.namelist()
        assert sorted(n for n in names if n.endswith(".png")) == [f"10_shp/sq{i}.png" for i in range(5)]
        assert exported.read("10_shp/sq3.txt").decode() == "shp, a square, number 3"


def test_configuration_presets_example_estimates_every_preset_and_a_custom_config(portal_url, token):
    out = run_example("configuration_presets.py", portal_url, token, "--images", "20", "--gpu", "rtx4090").stdout
    rows = {tuple(line.split()[:2]) for line in out.splitlines()}
    for name, preset in PRESETS.items():
        for family in preset["families"]:
            assert (name, family) in rows, out
    assert "custom config from sd15:" in out
    assert "custom estimate: 1200 steps" in out
    assert "server refused a negative learning rate: field config.learning_rate:" in out


def test_the_readme_script_runs_as_written(portal_url, token, tmp_path):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Scripting it\n"):]
    script = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    draw_folder(tmp_path / "shots")
    (tmp_path / "readme.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PYTEST", "LORASITE"))}
    env.update(LORASITE_URL=portal_url, LORASITE_TOKEN=token)
    result = subprocess.run([sys.executable, "readme.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 50 loss" in result.stdout
    assert result.stdout.splitlines()[-1] == "saved my-shots.safetensors"
    with safe_open(str(tmp_path / "my-shots.safetensors"), framework="pt") as weights:
        assert len(list(weights.keys())) > 0
    assert Dataset.objects.get(name="my-shots").images.count() == 4


def test_uploads_split_into_requests_keep_each_caption_with_its_image(client, member, tmp_path):
    folder = draw_folder(tmp_path / "shots", count=3)
    # The same stem in a subfolder: its caption must not be paired with the top-level shape0.png.
    (folder / "more").mkdir()
    (folder / "more" / "shape0.png").write_bytes(draw_png(7))
    (folder / "more" / "shape0.txt").write_text("from the subfolder")
    dataset = client.create_dataset("split")
    seen = []
    report = client.upload_folder(dataset.id, folder, progress=seen.append, max_files_per_request=4)
    # more/shape0 + caption | shape0, shape1 + captions | shape2 + caption: two shape0s never share one.
    assert report.requests == 3 and len(report.added) == 4 and not report.rejected
    captions = {a["sha256"]: a["caption"] for a in report.added}
    assert captions[hashlib.sha256(draw_png(7)).hexdigest()] == "from the subfolder"
    assert captions[hashlib.sha256(draw_png(0)).hexdigest()] == "shp, a drawn square number 0"
    assert [p.sent_bytes for p in seen] == sorted(p.sent_bytes for p in seen)
    assert seen[-1].fraction == 1.0 and seen[-1].files_done == seen[-1].files_total == 8

    archive = draw_zip(tmp_path / "big.zip")
    zipped_dataset = client.create_dataset("split-zip")
    report = client.upload_zip(zipped_dataset.id, archive, max_bytes_per_request=600)
    assert report.requests > 1
    zipped = {a["name"].split("/", 1)[1]: a for a in report.added}
    assert zipped["10_shp/sq3.png"]["caption"] == "a square, number 3"
    assert client.get_image(zipped["10_shp/sq3.png"]["id"]).repeats == 10


def test_a_bad_token_raises_authentication_error(portal_url):
    with Client(portal_url, "lst_not-a-real-token") as portal, pytest.raises(AuthenticationError) as caught:
        portal.list_datasets()
    assert caught.value.status == 401


def test_another_teams_dataset_and_job_raise_not_found(client, team_b, outsider, tiny_base_model, tmp_path):
    theirs = make_dataset(team_b, outsider, name="theirs")
    with pytest.raises(NotFoundError) as caught:
        client.get_dataset(str(theirs.uuid))
    assert caught.value.status == 404 and caught.value.message
    with pytest.raises(NotFoundError):
        client.upload_folder(str(theirs.uuid), draw_folder(tmp_path / "mine", count=1))
    assert theirs.images.count() == 4
    from training_app.services import submit_job

    job = submit_job(outsider, dataset_id=theirs.uuid, base_model="tiny-sd15",
                     config={"resolution": 64, "max_steps": 1})
    with pytest.raises(NotFoundError):
        next(client.follow(str(job.uuid)))


def test_a_bad_config_raises_validation_error_naming_the_field(client, dataset_a):
    with pytest.raises(ValidationError) as caught:
        client.submit_job(str(dataset_a.uuid), "tiny-sd15", preset="fast", config={"rank": 0})
    assert caught.value.status == 422
    assert caught.value.field == "config.rank"
    assert "rank" in caught.value.message
    with pytest.raises(ValidationError) as caught:
        client.estimate(config={"no_such_setting": 1}, family="sd15", image_count=4)
    assert caught.value.field == "config.no_such_setting" and "unknown setting" in caught.value.message
    # ninja's own request validation (before our code runs) maps the same way.
    with pytest.raises(ValidationError) as caught:
        client.create_dataset("")
    assert caught.value.field == "name"
    assert not TrainingJob.objects.exists()


def test_a_second_dataset_of_the_same_name_raises_conflict(client, dataset_a):
    with pytest.raises(ConflictError) as caught:
        client.create_dataset(dataset_a.name)
    assert caught.value.status == 409 and dataset_a.name in caught.value.message


def test_the_same_idempotency_key_returns_the_first_job(client, dataset_a):
    config = {"resolution": 64, "max_steps": 2, "rank": 4}
    first = client.submit_job(str(dataset_a.uuid), "tiny-sd15", config=config, idempotency_key="run-1")
    again = client.submit_job(str(dataset_a.uuid), "tiny-sd15", config=config, idempotency_key="run-1")
    assert again.id == first.id and TrainingJob.objects.count() == 1
    assert client.wait(first.id).status == "completed"
    with pytest.raises(ConflictError) as caught:
        client.cancel_job(first.id)
    assert caught.value.status == 409
    (entry,) = client.library()
    assert entry.job.id == first.id
    assert {a.kind for a in entry.loras} == {"lora_kohya", "lora_diffusers"}


def test_both_weight_layouts_download_and_load(client, dataset_a, tmp_path):
    job = client.submit_job(str(dataset_a.uuid), "tiny-sd15", config={"resolution": 64, "max_steps": 2, "rank": 4})
    messages = list(client.follow(job.id))
    assert messages[0].type == "snapshot" and messages[-1].finished and messages[-1].status == "completed"
    kohya = client.download_weights(job.id, tmp_path / "k.safetensors", layout="kohya")
    diffusers = client.download_weights(job.id, f"{tmp_path}/d/", layout="diffusers")
    with safe_open(str(kohya), framework="pt") as k, safe_open(str(diffusers), framework="pt") as d:
        assert any(key.startswith("lora_unet_") for key in k.keys())
        assert any(key.startswith("unet.") for key in d.keys())
    with pytest.raises(ValidationError) as caught:
        client.download_weights(job.id, tmp_path / "x", layout="nope")
    assert caught.value.field == "layout" and not (tmp_path / "x").exists()


def test_follow_survives_a_daphne_restart_and_ends_with_the_job(redis_stack, member, dataset_a, tiny_base_model):
    token = ApiToken.issue(member, "follow")[1]
    port = free_port()
    daphne = [bin_path("daphne"), "-b", "127.0.0.1", "-p", str(port), "lorasite.asgi:application"]
    web = redis_stack.start(daphne)
    wait_for_port(port, web)
    redis_stack.start_worker("gpu", "default")
    with Client(f"http://127.0.0.1:{port}", token) as portal:
        job = portal.submit_job(str(dataset_a.uuid), "tiny-sd15",
                                config={"resolution": 64, "max_steps": 100000, "rank": 4})
        step_before_drop = None
        resumed = []
        last = None
        cancelled = False
        for message in portal.follow(job.id, reconnect_delay=0.2):
            last = message
            if message.type == "progress" and step_before_drop is None:
                step_before_drop = message.step
                stop_process(web)  # every open socket drops with it
                web = redis_stack.start(daphne)
                wait_for_port(port, web)
            elif message.resumed:
                resumed.append(message)
            elif resumed and not cancelled and message.type == "progress" and message.step > step_before_drop:
                portal.cancel_job(job.id)
                cancelled = True
    assert step_before_drop is not None and cancelled and len(resumed) == 1
    assert resumed[0].type == "snapshot" and resumed[0].step >= step_before_drop
    assert last.type == "status" and last.status == "cancelled"
    assert TrainingJob.objects.get(uuid=job.id).status == JobStatus.CANCELLED
