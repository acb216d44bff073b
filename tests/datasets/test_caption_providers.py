"""Captioning providers against loopback servers speaking their protocols: the request each sends,
the answers each understands, and what each error turns into (retry, fail the image, fail the run)."""

from __future__ import annotations

import random

import pytest

from datasets_app.captioning.base import (
    CaptionInput,
    FatalError,
    ImageError,
    ProviderSettings,
    RetryableError,
)
from datasets_app.captioning.images import prepare_image
from datasets_app.captioning.registry import build_provider
from datasets_app.captioning.retry import Cancelled, RetryPolicy, caption_one
from datasets_app.captioning.simple import SimpleProvider
from tests.datasets.conftest import image_bytes
from tests.fakes.caption_servers import FakeCaptionServer, Reply

PROTOCOLS = ["hf", "openai", "ollama"]
POLICY = RetryPolicy(attempts=4, base_seconds=0.01, max_seconds=0.05)


class Waits:
    """Stands in for the clock between retries: records what the retry asked to wait, and can
    report a cancel arriving during the wait."""

    def __init__(self, cancel_after: int | None = None):
        self.asked: list[float] = []
        self.cancel_after = cancel_after

    def __call__(self, seconds: float) -> bool:
        self.asked.append(seconds)
        return self.cancel_after is not None and len(self.asked) >= self.cancel_after


def provider_for(server: FakeCaptionServer, timeout: float = 5.0, api_key: str = "", **extra):
    settings = ProviderSettings(type=server.protocol, model=server.model, base_url=server.url, api_key=api_key,
                                timeout=timeout, **extra)
    return build_provider(settings, api_key_env="CAPTION_KEY")


def item(size=(64, 48)) -> CaptionInput:
    return CaptionInput(data=prepare_image(image_bytes(size=size)), filename="red_circle.png", dataset="shapes",
                        trigger="shp")


def run(provider, waits=None, prompt="Describe it."):
    try:
        return caption_one(provider, item(), prompt, POLICY, waits or Waits(), random.Random(1))
    finally:
        provider.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_each_provider_captions_an_image_through_its_protocol(protocol):
    with FakeCaptionServer(protocol, api_key="sk-test") as server:
        caption = run(provider_for(server, api_key="sk-test"))
        assert caption.text == "The image shows a shape of 64x48 pixels"
        assert caption.model == server.model
        (request,) = server.posts()
        assert request.headers["Authorization"] == "Bearer sk-test"
        assert request.image_format == "JPEG"


def test_openai_request_carries_the_prompt_and_generation_settings():
    with FakeCaptionServer("openai", caption="{prompt}") as server:
        provider = provider_for(server, max_tokens=77, temperature=0.5)
        assert run(provider, prompt="Name the shape.").text == "Name the shape."
        body = server.posts()[0].json
        assert body["max_tokens"] == 77 and body["temperature"] == 0.5 and body["model"] == server.model


def test_ollama_sends_bare_base64_and_options():
    with FakeCaptionServer("ollama", caption="{prompt}") as server:
        assert run(provider_for(server), prompt="What is it?").text == "What is it?"
        body = server.posts()[0].json
        assert not body["images"][0].startswith("data:")
        assert body["options"]["num_predict"] == 200


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_large_photo_is_downscaled_before_it_is_sent(protocol):
    with FakeCaptionServer(protocol) as server:
        provider = provider_for(server)
        big = CaptionInput(data=prepare_image(image_bytes(size=(3000, 2000)), max_side=768))
        caption_one(provider, big, "", POLICY, Waits())
        provider.close()
        assert server.posts()[0].image_size == (768, 512)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_429_with_retry_after_is_waited_out_then_retried(protocol):
    with FakeCaptionServer(protocol) as server:
        server.then(Reply(429, {"error": "rate limited"}, {"Retry-After": "3"}))
        waits = Waits()
        assert run(provider_for(server), waits).text.startswith("The image shows")
        assert len(server.posts()) == 2
        assert 3 <= waits.asked[0] <= 3.3  # the server's hint, plus a little jitter


def test_hf_503_model_loading_waits_for_the_estimated_time():
    with FakeCaptionServer("hf") as server:
        server.then(Reply(503, {"error": "Model Salesforce/blip2 is currently loading", "estimated_time": 20.5}))
        waits = Waits()
        run(provider_for(server), waits)
        assert 20.5 <= waits.asked[0] <= 21.5
        assert len(server.posts()) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_500_is_retried_with_growing_backoff_then_reported(protocol):
    with FakeCaptionServer(protocol) as server:
        server.then(*[Reply(500, {"error": "boom"})] * 4)
        waits = Waits()
        with pytest.raises(RetryableError, match="answered 500: boom"):
            run(provider_for(server), waits)
        assert len(server.posts()) == POLICY.attempts
        assert len(waits.asked) == POLICY.attempts - 1
        assert all(0 < w <= POLICY.max_seconds for w in waits.asked)


def test_a_cancel_during_the_backoff_stops_the_retries():
    with FakeCaptionServer("openai") as server:
        server.then(*[Reply(500, {"error": "boom"})] * 4)
        with pytest.raises(Cancelled):
            run(provider_for(server), Waits(cancel_after=1))
        assert len(server.posts()) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_that_does_not_answer_in_time_is_a_retryable_timeout(protocol):
    with FakeCaptionServer(protocol) as server:
        server.then(Reply(delay=1.0), Reply(delay=1.0))
        waits = Waits()
        caption = run(provider_for(server, timeout=0.3), waits)
        assert caption.text.startswith("The image shows")
        assert len(waits.asked) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_malformed_json_fails_only_that_image(protocol):
    with FakeCaptionServer(protocol) as server:
        server.then(Reply(200, b"{not json"))
        with pytest.raises(ImageError, match="not JSON"):
            run(provider_for(server))
        assert len(server.posts()) == 1


@pytest.mark.parametrize("protocol,empty", [
    ("hf", [{"generated_text": "  "}]), ("hf", []),
    ("openai", {"choices": [{"message": {"role": "assistant", "content": ""}}]}), ("openai", {"choices": []}),
    ("ollama", {"response": "", "done": True}),
])
def test_an_empty_answer_fails_only_that_image(protocol, empty):
    with FakeCaptionServer(protocol) as server:
        server.then(Reply(200, empty))
        with pytest.raises(ImageError, match="empty caption"):
            run(provider_for(server))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_refused_key_fails_the_run_and_names_the_variable_to_fix(protocol):
    with FakeCaptionServer(protocol, api_key="right") as server:
        with pytest.raises(FatalError, match=r"401.*check the environment variable CAPTION_KEY"):
            run(provider_for(server, api_key="wrong"))
        assert len(server.posts()) == 1  # never retried


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_402_out_of_credits_fails_the_run_with_that_message(protocol):
    with FakeCaptionServer(protocol) as server:
        server.then(Reply(402, {"error": {"message": "You have exceeded your monthly credits", "code": 402}}))
        with pytest.raises(FatalError, match=r"exceeded your monthly credits.*out of credits"):
            run(provider_for(server))


def test_openai_error_body_with_numeric_code_is_read_defensively():
    with FakeCaptionServer("openai") as server:
        server.then(Reply(400, {"error": {"code": 400, "type": "invalid_request_error"}}))
        with pytest.raises(ImageError, match="rejected the image \\(400\\): invalid_request_error"):
            run(provider_for(server))


def test_an_unknown_model_fails_the_run_saying_to_check_the_model_name():
    with FakeCaptionServer("hf") as server:
        provider = build_provider(ProviderSettings(type="hf", model="no/such-model", base_url=server.url))
        with pytest.raises(FatalError, match="check the base URL and the model name"):
            run(provider)


def test_nothing_listening_fails_the_run_saying_to_check_the_url():
    from tests.services import free_port

    provider = build_provider(ProviderSettings(type="openai", model="m", base_url=f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(FatalError, match="cannot reach"):
        run(provider)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_availability_says_reachable_and_whether_the_model_is_there(protocol):
    with FakeCaptionServer(protocol) as server:
        good = provider_for(server)
        assert good.check().ok
        good.close()
        if protocol != "hf":
            missing = build_provider(ProviderSettings(type=protocol, model="other", base_url=server.url))
            check = missing.check()
            assert not check.ok and "other" in check.detail
            missing.close()
    gone = provider_for(server)
    assert not gone.check().ok


def test_simple_provider_fills_its_template():
    provider = SimpleProvider(ProviderSettings(type="simple"))
    (caption,) = provider.caption_batch([item()], "a photo of {trigger}, {filename}, from {dataset}")
    assert caption.text == "a photo of shp, red circle, from shapes"
    with pytest.raises(FatalError, match="may use only"):
        provider.caption_batch([item()], "a photo of {person}")


def test_a_small_upright_jpeg_is_sent_as_it_is_and_anything_else_is_reencoded():
    small_jpeg = image_bytes("JPEG", size=(300, 200))
    assert prepare_image(small_jpeg, 768) == small_jpeg
    png = prepare_image(image_bytes("PNG", size=(300, 200)), 768)
    assert png[:2] == b"\xff\xd8"  # JPEG
    big = prepare_image(image_bytes("JPEG", size=(2000, 1000)), 768)
    import io as _io

    from PIL import Image

    assert Image.open(_io.BytesIO(big)).size == (768, 384)


def test_a_sideways_phone_photo_is_turned_upright_before_it_is_sent():
    import io as _io

    from PIL import Image

    img = Image.new("RGB", (400, 200), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = _io.BytesIO()
    img.save(buffer, format="JPEG", exif=exif)
    sent = prepare_image(buffer.getvalue(), 768)
    assert Image.open(_io.BytesIO(sent)).size == (200, 400)
