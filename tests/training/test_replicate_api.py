"""The Replicate client against a loopback Replicate (tests/fakes): every call, every failure it maps.

The fake is a real HTTP server on 127.0.0.1; nothing here reaches the internet. The official `replicate`
client is pointed at the same fake at the end, so the fake is held to what that client sends and parses.
"""

from __future__ import annotations

import io
import socket
import time
import zipfile
from pathlib import Path

import pytest
import replicate
from PIL import Image
from safetensors import safe_open

from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.replicate_sim import TrainingPlan
from tests.fakes.replicate_trainers import FLUX_TRAINER, SDXL_TRAINER
from training_app.backends.replicate_api import (
    ReplicateClient,
    ReplicateError,
    Timeouts,
    Training,
    parse_retry_after,
)
from training_app.backends.replicate_archives import ArchiveLimits
from training_app.backends.replicate_inputs import map_inputs, parse_progress

FLUX = FLUX_TRAINER.ref
SDXL = SDXL_TRAINER.ref
FLUX_CONFIG = {"rank": 8, "alpha": 8, "resolution": 512, "learning_rate": 4e-4, "max_steps": 12}


@pytest.fixture
def fake():
    with FakeReplicate() as server:
        yield server


class Sleeps(list):
    """Stands in for time.sleep inside the client's retry loop, so a test sees each wait it asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def client(fake, sleeps):
    with ReplicateClient(fake.base_url, fake.token, sleep=sleeps) as api:
        yield api


@pytest.fixture
def images(tmp_path) -> list[tuple[Path, str]]:
    items = []
    for index, name in enumerate(["red one.png", "Grüne Ecke.jpg", "blue.webp"]):
        path = tmp_path / "images" / name
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 24), (80 * index, 40, 200)).save(path)
        items.append((path, f"  TOK, a square number {index}  "))
    return items


def posts(fake, path_part: str) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and path_part in r.path)


def start_training(client, images, plan: TrainingPlan | None = None, fake=None, **config):
    if plan is not None:
        fake.plan_next(plan)
    upload = client.upload_dataset(images)
    client.ensure_model("acme", "my-lora")
    mapped = map_inputs({**FLUX_CONFIG, **config}, "flux", "TOK", True, input_images=upload.url)
    return client.create_training(FLUX, "acme/my-lora", mapped.inputs), upload


def wait_done(client, training: Training, timeout: float = 10.0) -> Training:
    deadline = time.monotonic() + timeout
    while not training.done and time.monotonic() < deadline:
        time.sleep(0.01)
        training = client.get_training(training.id)
    return training


# -- account and token ----------------------------------------------------------------------------------
def test_account_names_the_tokens_user(client):
    account = client.account()
    assert (account.username, account.type) == ("acme", "user")


def test_bad_token_is_a_non_retryable_401_that_points_at_the_environment_variable(fake):
    with ReplicateClient(fake.base_url, "r8_wrong_token_123") as api, pytest.raises(ReplicateError) as caught:
        api.account()
    error = caught.value
    assert (error.status, error.retryable) == (401, False)
    assert "environment variable" in error.message
    assert "r8_wrong_token_123" not in error.message


def test_token_appears_in_no_repr_and_no_error_message(fake, images):
    token = fake.token
    with ReplicateClient(fake.base_url, token, sleep=Sleeps()) as api:
        assert token not in repr(api)
        messages = []
        for call in (lambda: api.get_training("nosuchtraining"),
                     lambda: api.create_training(FLUX, "acme/missing", {"input_images": "x"}),
                     lambda: api.ensure_model("someone-else", "x")):
            with pytest.raises(ReplicateError) as caught:
                call()
            messages.append(caught.value.message + caught.value.detail)
    assert messages and not any(token in message for message in messages)


def test_client_without_a_token_is_refused_before_any_request():
    with pytest.raises(ReplicateError, match="environment variable"):
        ReplicateClient("http://127.0.0.1:9", "")


def test_webhook_secret_is_the_accounts_whsec_key(client, fake):
    assert client.webhook_secret() == fake.webhook_secret


# -- files ----------------------------------------------------------------------------------------------
def test_upload_zips_each_image_with_a_same_name_caption(client, fake, images):
    upload = client.upload_dataset(images)
    stored = fake.files[upload.id]
    assert upload.url == stored["record"]["urls"]["get"]
    assert upload.sha256 == stored["record"]["checksums"]["sha256"]
    with zipfile.ZipFile(io.BytesIO(stored["payload"])) as archive:
        names = archive.namelist()
        assert names == ["0001_red_one.png", "0001_red_one.txt", "0002_Gr_ne_Ecke.jpg",
                         "0002_Gr_ne_Ecke.txt", "0003_blue.webp", "0003_blue.txt"]
        assert archive.read("0002_Gr_ne_Ecke.txt").decode() == "TOK, a square number 1"
        assert archive.read("0001_red_one.png") == images[0][0].read_bytes()


def test_upload_takes_zip_bytes_and_a_zip_path(client, fake, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.png", b"png")
    path = tmp_path / "ready.zip"
    path.write_bytes(buffer.getvalue())
    from_bytes = client.upload_dataset(buffer.getvalue())
    from_path = client.upload_dataset(path)
    assert fake.files[from_bytes.id]["payload"] == fake.files[from_path.id]["payload"] == buffer.getvalue()


def test_upload_that_meets_a_500_is_sent_again_and_succeeds(client, fake, images, sleeps):
    fake.inject("POST", r"^/v1/files$", 500)
    upload = client.upload_dataset(images)
    assert upload.id in fake.files
    assert posts(fake, "/v1/files") == 2 and len(sleeps) == 1


def test_upload_that_arrives_corrupted_is_sent_again(client, fake, images):
    fake.corrupt_uploads = 1
    upload = client.upload_dataset(images)
    assert posts(fake, "/v1/files") == 2 and upload.sha256 == fake.files[upload.id]["record"]["checksums"]["sha256"]
    fake.corrupt_uploads = 10
    with pytest.raises(ReplicateError, match="corrupted") as caught:
        client.upload_dataset(images)
    assert caught.value.retryable


def test_uploaded_file_can_be_read_back_with_the_token_only(client, fake, images):
    import httpx

    upload = client.upload_dataset(images)
    with_token = httpx.get(upload.url + "/download", headers={"Authorization": f"Bearer {fake.token}"})
    without = httpx.get(upload.url + "/download")
    assert with_token.content == fake.files[upload.id]["payload"] and without.status_code == 401


def test_dataset_with_a_non_image_is_refused_before_anything_is_sent(client, fake, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ReplicateError, match=r"notes\.txt"):
        client.upload_dataset([(notes, "x")])
    assert posts(fake, "/v1/files") == 0


# -- models ---------------------------------------------------------------------------------------------
def test_ensure_model_creates_a_missing_destination_once(client, fake):
    assert client.ensure_model("acme", "my-lora", hardware="gpu-h100", visibility="private") is True
    assert client.ensure_model("acme", "my-lora") is False
    assert fake.models[("acme", "my-lora")]["visibility"] == "private"
    assert posts(fake, "/v1/models") == 1


def test_ensure_model_for_an_owner_the_token_cannot_use_is_a_404_on_destination(client):
    with pytest.raises(ReplicateError) as caught:
        client.ensure_model("someone-else", "my-lora")
    assert (caught.value.status, caught.value.field, caught.value.retryable) == (404, "destination", False)
    assert "someone-else" in caught.value.message


def test_ensure_model_takes_a_model_created_meanwhile_as_existing(client, fake):
    client.ensure_model("acme", "raced")
    fake.inject("GET", r"^/v1/models/acme/raced$", 404)  # our GET misses it; the POST then meets a 409
    assert client.ensure_model("acme", "raced") is False


def test_latest_version_pins_a_trainer_named_without_one(client):
    assert client.latest_version("ostris/flux-dev-lora-trainer") == FLUX_TRAINER.version
    with pytest.raises(ReplicateError, match="no model"):
        client.latest_version("ostris/nothing-here")


# -- trainings ------------------------------------------------------------------------------------------
def test_create_training_sends_destination_inputs_and_webhook(client, fake, images):
    upload = client.upload_dataset(images)
    client.ensure_model("acme", "my-lora")
    inputs = map_inputs(FLUX_CONFIG, "flux", "TOK", True, input_images=upload.url).inputs
    training = client.create_training(FLUX, "acme/my-lora", inputs, webhook_url="https://portal.test/hooks/r/1")
    sim = fake.trainings[training.id]
    assert (training.status, training.destination) == ("starting", "acme/my-lora")
    assert sim.input == inputs and sim.webhook == "https://portal.test/hooks/r/1"
    assert sim.events == ("start", "logs", "completed")
    assert sim.image_count == 3 and set(sim.captions.values()) == {f"TOK, a square number {i}" for i in range(3)}


def test_training_into_a_missing_destination_is_a_404_naming_it(client, images):
    upload = client.upload_dataset(images)
    with pytest.raises(ReplicateError) as caught:
        client.create_training(FLUX, "acme/not-created", {"input_images": upload.url})
    assert (caught.value.status, caught.value.field) == (404, "destination")
    assert "acme/not-created" in caught.value.message and not caught.value.may_have_started


def test_training_on_an_unknown_trainer_version_names_the_trainer(client):
    client.ensure_model("acme", "my-lora")
    with pytest.raises(ReplicateError) as caught:
        client.create_training("ostris/flux-dev-lora-trainer:" + "0" * 64, "acme/my-lora", {})
    assert caught.value.field == "trainer"


def test_malformed_trainer_or_destination_is_refused_without_a_request(client, fake):
    before = len(fake.requests)
    for trainer, destination in (("ostris/flux-dev-lora-trainer", "acme/x"), (FLUX, "acme"), (FLUX, "a/B C")):
        with pytest.raises(ReplicateError):
            client.create_training(trainer, destination, {})
    assert len(fake.requests) == before


def test_input_the_trainer_refuses_is_a_422_naming_the_field(client, images):
    upload = client.upload_dataset(images)
    client.ensure_model("acme", "my-lora")
    with pytest.raises(ReplicateError) as caught:
        client.create_training(FLUX, "acme/my-lora", {"input_images": upload.url, "steps": 2, "optimizer": "sgd"})
    error = caught.value
    assert (error.status, error.field, error.retryable) == (422, "steps", False)
    assert "greater than or equal to 3" in error.message and "optimizer" in error.message


def test_training_goes_starting_processing_succeeded_with_growing_logs(client, fake, images):
    training, _ = start_training(client, images, TrainingPlan(seconds_per_step=0.03, start_delay_s=0.05), fake)
    seen, log_lengths, cursor, steps = [training.status], [], 0, []
    while not training.done:
        time.sleep(0.01)
        training = client.get_training(training.id)
        if training.status != seen[-1]:
            seen.append(training.status)
        log_lengths.append(len(training.logs))
        progress = parse_progress(training.logs, 12, cursor, final=training.done)
        cursor = progress.cursor
        steps += [step for step, _ in progress.points]
    assert seen == ["starting", "processing", "succeeded"]
    assert log_lengths == sorted(log_lengths) and steps[-1] == 12 and steps == sorted(steps)
    assert training.predict_time and training.predict_time > 0
    assert training.weights_url and training.output_version.startswith("acme/my-lora:")


def test_failed_training_carries_replicates_error_text(client, fake, images):
    plan = TrainingPlan(fail_at_step=4, error="CUDA out of memory. Tried to allocate 2.00 GiB")
    training = wait_done(client, start_training(client, images, plan, fake)[0])
    assert training.status == "failed"
    assert training.error == "CUDA out of memory. Tried to allocate 2.00 GiB"
    assert training.weights_url is None and "Traceback" in training.logs


def test_cancel_stops_a_running_training_for_good(client, fake, images):
    training, _ = start_training(client, images, TrainingPlan(pause_at_step=3), fake)
    fake.wait_for(training.id, ("processing",))
    cancelled = client.cancel_training(training.id)
    fake.release(training.id)
    time.sleep(0.1)
    after = client.get_training(training.id)
    assert cancelled.status == after.status == "canceled"
    assert after.weights_url is None and fake.trainings[training.id].step <= 3


def test_cancel_of_a_finished_training_leaves_it_succeeded(client, fake, images):
    training = wait_done(client, start_training(client, images)[0])
    assert client.cancel_training(training.id).status == "succeeded"


def test_unknown_training_is_a_404_and_a_malformed_id_never_leaves_the_client(client, fake):
    with pytest.raises(ReplicateError) as caught:
        client.get_training("abcdefghijklmnopqrstuvwxyz")
    assert caught.value.status == 404
    before = len(fake.requests)
    with pytest.raises(ReplicateError, match="not a Replicate training id"):
        client.get_training("../account")
    assert len(fake.requests) == before


def test_find_training_walks_the_pages_to_the_one_for_an_upload(fake, sleeps, images):
    fake.page_size = 2
    with ReplicateClient(fake.base_url, fake.token, sleep=sleeps) as api:
        first, upload = start_training(api, images)
        for _ in range(4):
            start_training(api, images)
        assert len(list(api.list_trainings())) == 5
        assert api.find_training(upload.url).id == first.id
        assert api.find_training("http://nowhere/none") is None


def test_a_next_page_link_to_another_host_is_not_followed(fake, sleeps, images):
    fake.page_size, fake.page_link_base = 1, "http://127.0.0.2:9"
    with ReplicateClient(fake.base_url, fake.token, sleep=sleeps) as api:
        start_training(api, images)
        start_training(api, images)
        with pytest.raises(ReplicateError, match="another host"):
            list(api.list_trainings())


# -- rate limits, server errors, timeouts ---------------------------------------------------------------
@pytest.mark.parametrize(("headers", "detail", "expected"), [
    ({"retry-after": "7"}, "", 7.0),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, "", 30.0),
    ({"ratelimit-reset": "4"}, "", 4.0),
    ({}, "Request was throttled. Your rate limit resets in ~30s.", 30.0),
    ({}, "slow down", None),
])
def test_the_wait_a_429_asks_for_is_read_from_each_place_replicate_puts_it(headers, detail, expected):
    now = 1445412480.0  # 30 s before the HTTP date above
    assert parse_retry_after(headers, detail, now=now) == expected


def test_rate_limited_read_waits_the_reset_then_succeeds(client, fake, sleeps):
    fake.rate_limit(reset_s=2)
    assert client.account().username == "acme"
    assert sleeps == [2.0]


def test_rate_limit_longer_than_the_retry_budget_raises_with_the_reset(client, fake, sleeps):
    fake.rate_limit(reset_s=120)
    with pytest.raises(ReplicateError) as caught:
        client.account()
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 120.0)
    assert "120 s" in caught.value.message and sleeps == []


def test_rate_limited_training_create_is_not_resent_and_says_when_to_retry(client, fake, images):
    upload = client.upload_dataset(images)
    client.ensure_model("acme", "my-lora")
    fake.rate_limit(reset_s=3, method="POST", path="/trainings$")
    with pytest.raises(ReplicateError) as caught:
        client.create_training(FLUX, "acme/my-lora", {"input_images": upload.url})
    assert (caught.value.retryable, caught.value.retry_after, caught.value.may_have_started) == (True, 3.0, False)
    assert posts(fake, "/trainings") == 1 and not fake.trainings


def test_server_errors_on_reads_are_retried_then_reported_retryable(client, fake, sleeps):
    fake.inject("GET", r"^/v1/account$", 503, times=10)
    with pytest.raises(ReplicateError) as caught:
        client.account()
    assert (caught.value.status, caught.value.retryable) == (503, True)
    assert len([r for r in fake.requests if r.path == "/v1/account"]) == 3 and sleeps == [0.5, 1.0]


def test_server_error_on_training_create_is_not_resent_and_may_have_started(client, fake, images):
    upload = client.upload_dataset(images)
    client.ensure_model("acme", "my-lora")
    fake.inject("POST", "/trainings$", 502)
    with pytest.raises(ReplicateError) as caught:
        client.create_training(FLUX, "acme/my-lora", {"input_images": upload.url})
    assert (caught.value.retryable, caught.value.may_have_started) == (True, True)
    assert posts(fake, "/trainings") == 1


def test_timed_out_create_may_have_started_and_find_training_finds_it(fake, images):
    with ReplicateClient(fake.base_url, fake.token, Timeouts(read=0.3), sleep=Sleeps()) as api:
        upload = api.upload_dataset(images)
        api.ensure_model("acme", "my-lora")
        fake.inject("POST", "/trainings$", None, delay_s=0.8)  # answers, but after the client gave up
        inputs = map_inputs(FLUX_CONFIG, "flux", "TOK", True, input_images=upload.url).inputs
        with pytest.raises(ReplicateError) as caught:
            api.create_training(FLUX, "acme/my-lora", inputs)
        assert (caught.value.retryable, caught.value.may_have_started, caught.value.status) == (True, True, None)
        deadline = time.monotonic() + 10
        while not fake.trainings and time.monotonic() < deadline:  # the slow answer lands after we gave up
            time.sleep(0.02)
        found = api.find_training(upload.url)
    assert found is not None and list(fake.trainings) == [found.id]


def test_unreachable_server_is_retryable_and_started_nothing(sleeps):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ReplicateClient(f"http://127.0.0.1:{port}", "r8_x", sleep=sleeps) as api, \
            pytest.raises(ReplicateError) as caught:
        api.create_training(FLUX, "acme/my-lora", {})
    assert (caught.value.retryable, caught.value.may_have_started) == (True, False)
    assert "Could not reach" in caught.value.message


# -- weights --------------------------------------------------------------------------------------------
def test_downloaded_lora_is_the_only_file_written_and_it_loads(client, fake, images, tmp_path):
    training = wait_done(client, start_training(client, images, rank=8)[0])
    out = tmp_path / "artifacts"
    weights = client.download_weights(training.weights_url, out)
    assert [p.name for p in out.iterdir()] == ["lora.safetensors"]
    assert "output/flux_train_replicate/lora.safetensors" in weights.members
    with safe_open(str(weights.lora_path), framework="pt") as lora:
        keys = list(lora.keys())
        assert keys and all(k.startswith("transformer.single_transformer_blocks.") for k in keys)
        assert lora.get_tensor(keys[0]).shape[0 if "lora_A" in keys[0] else 1] == 8
    assert set(weights.tensors) == set(keys)


def test_weights_are_fetched_from_the_delivery_host_without_the_token(client, fake, images, tmp_path):
    training = wait_done(client, start_training(client, images)[0])
    client.download_weights(training.weights_url, tmp_path / "w")
    delivery = [r for r in fake.requests if r.server == "delivery"]
    assert delivery and all("authorization" not in r.headers for r in delivery)


def test_weights_url_that_is_not_https_is_refused_without_a_request(client, fake, tmp_path):
    before = len(fake.requests)
    for url in ("http://weights.example.com/w.tar", "file:///etc/passwd", "ftp://x/w.tar", ""):
        with pytest.raises(ReplicateError, match="not https"):
            client.download_weights(url, tmp_path / "w")
    assert len(fake.requests) == before


def test_weights_over_the_download_limit_are_refused_and_nothing_is_kept(client, fake, images, tmp_path):
    training = wait_done(client, start_training(client, images)[0])
    with pytest.raises(ReplicateError, match="limit"):
        client.download_weights(training.weights_url, tmp_path / "w", ArchiveLimits(max_download_bytes=1000))
    assert list((tmp_path / "w").iterdir()) == []


def test_weights_archive_with_a_climbing_path_is_refused(client, fake, tmp_path):
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped.safetensors")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    url = fake.host("evil.tar", buffer.getvalue())
    with pytest.raises(ReplicateError, match=r"refused.*'\.\.'"):
        client.download_weights(url, tmp_path / "deep" / "w")
    assert not any(p.name == "escaped.safetensors" for p in tmp_path.rglob("*"))


def test_missing_weights_are_a_clear_404(client, fake, tmp_path):
    with pytest.raises(ReplicateError, match="no longer has the trained weights"):
        client.download_weights(f"{fake.delivery_url}/nothing/trained_model.tar", tmp_path / "w")


def test_sdxl_training_reads_caption_csv_and_its_lora_loads(client, fake, images, tmp_path):
    mapped = map_inputs({"rank": 16, "max_steps": 10, "lr_scheduler": "linear"}, "sdxl", "TOK", True)
    upload = client.upload_dataset(images, caption_csv=mapped.caption_csv)
    client.ensure_model("acme", "sdxl-lora")
    training = client.create_training(SDXL, "acme/sdxl-lora", {**mapped.inputs, "input_images": upload.url})
    assert "caption.csv" in fake.trainings[training.id].dataset
    training = wait_done(client, training)
    weights = client.download_weights(training.weights_url, tmp_path / "sdxl")
    assert {"lora.safetensors", "embeddings.pti"} <= set(weights.members)
    with safe_open(str(weights.lora_path), framework="np") as lora:
        assert all(".processor." in key for key in lora.keys())


# -- the official client against the same fake ------------------------------------------------------------
def test_official_client_runs_a_whole_training_against_the_fake(fake, images, tmp_path):
    official = replicate.Client(api_token=fake.token, base_url=fake.base_url)
    assert official.accounts.current().username == "acme"
    with images[0][0].open("rb") as handle:
        file = official.files.create(handle, filename="data.zip")
    assert file.urls["get"].startswith(fake.base_url) and file.size == images[0][0].stat().st_size
    assert official.files.get(file.id).checksums["sha256"] == file.checksums["sha256"]
    model = official.models.create("acme", "official-lora", visibility="private", hardware="gpu-h100")
    assert model.id == "acme/official-lora"
    assert official.models.get("ostris/flux-dev-lora-trainer").latest_version.id == FLUX_TRAINER.version
    ours = ReplicateClient(fake.base_url, fake.token)
    upload = ours.upload_dataset(images)  # our upload, their training: the two clients agree on shapes
    training = official.trainings.create(version=FLUX, input={"input_images": upload.url, "steps": 5},
                                         destination="acme/official-lora")
    assert training.status == "starting"
    fake.wait_for(training.id)
    done = official.trainings.get(training.id)
    assert done.status == "succeeded" and done.output["weights"].endswith("trained_model.tar")
    assert done.destination == "acme/official-lora"
    assert official.trainings.list().results[0].id == training.id
    assert official.trainings.cancel(training.id).status == "succeeded"
    assert official.webhooks.default.secret().key == fake.webhook_secret
    assert ours.download_weights(done.output["weights"], tmp_path / "w").lora_path.exists()
    ours.close()


def test_official_client_sees_replicates_error_shapes(fake):
    official = replicate.Client(api_token=fake.token, base_url=fake.base_url)
    with pytest.raises(replicate.exceptions.ReplicateError) as caught:
        official.trainings.create(version=FLUX, input={"steps": 1}, destination="acme/nothing")
    assert caught.value.status == 404 and "destination" in caught.value.detail
    official.models.create("acme", "x", visibility="private", hardware="cpu")
    with pytest.raises(replicate.exceptions.ReplicateError) as caught:
        official.trainings.create(version=FLUX, input={"steps": 1}, destination="acme/x")
    assert caught.value.status == 422 and "input.steps" in caught.value.detail
    bad = replicate.Client(api_token="r8_wrong", base_url=fake.base_url)
    with pytest.raises(replicate.exceptions.ReplicateError) as caught:
        bad.accounts.current()
    assert (caught.value.status, caught.value.title) == (401, "Unauthenticated")
