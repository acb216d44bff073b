"""The `local` provider: transformers' AutoModelForImageTextToText + AutoProcessor on the tiny
random BLIP that `manage.py make_tiny_captioner` builds, batched; model folders stay inside
CAPTION_MODELS_DIR."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from datasets_app.captioning.base import CaptionInput, FatalError, ImageError, ProviderSettings
from datasets_app.captioning.images import prepare_image
from datasets_app.captioning.local import check_local
from datasets_app.captioning.registry import build_provider
from datasets_app.captioning.tiny import WORDS
from tests.datasets.conftest import image_bytes


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    from django.conf import settings

    root = tmp_path_factory.mktemp("captioners")
    old = settings.CAPTION_MODELS_DIR
    settings.CAPTION_MODELS_DIR = root
    out = io.StringIO()
    call_command("make_tiny_captioner", stdout=out)
    yield root / "tiny-blip", out.getvalue().strip()
    settings.CAPTION_MODELS_DIR = old


def provider(**options):
    return build_provider(ProviderSettings(type="local", model="tiny-blip", max_tokens=8, options=options))


def items(n):
    return [CaptionInput(data=prepare_image(image_bytes(size=(64 + i * 8, 48), seed=i))) for i in range(n)]


def test_make_tiny_captioner_writes_a_small_loadable_folder_and_prints_its_path(tiny_blip):
    folder, printed = tiny_blip
    assert printed == str(folder)
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 1_000_000
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        f.name for f in folder.iterdir()}


def test_local_provider_captions_a_batch_with_real_generated_words(tiny_blip):
    local = provider(batch_size=3)
    assert local.batch_size == 3
    results = local.caption_batch(items(3), "")
    assert len(results) == 3
    for caption in results:
        words = caption.text.split()
        assert len(words) >= 1 and set(words) <= set(WORDS)
        assert caption.model == "tiny-blip"
    # Greedy decoding: the same images give the same captions.
    assert [c.text for c in local.caption_batch(items(3), "")] == [c.text for c in results]


def test_a_prompt_conditions_the_caption(tiny_blip):
    (caption,) = provider().caption_batch(items(1), "a photo of")
    assert caption.text.startswith("a photo of")
    assert len(caption.text.split()) > 3


def test_an_undecodable_image_fails_alone_in_its_batch(tiny_blip):
    results = provider().caption_batch([items(1)[0], CaptionInput(data=b"not an image")], "")
    assert isinstance(results[1], ImageError)
    assert results[0].text


@pytest.mark.parametrize("model", ["../outside", "/etc", "missing-model", ""])
def test_a_model_outside_the_models_folder_or_missing_is_refused(tiny_blip, model):
    with pytest.raises(FatalError):
        build_provider(ProviderSettings(type="local", model=model))
    assert not check_local(model).ok


def test_availability_of_a_local_model_needs_no_torch(tiny_blip):
    assert check_local("tiny-blip").ok


def test_make_tiny_captioner_refuses_a_path_as_name(tiny_blip):
    with pytest.raises(CommandError):
        call_command("make_tiny_captioner", "../x")
