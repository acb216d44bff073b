"""clip_skip changes which text-encoder layer training and samples use; the job log gets kohya-style step lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from training_app.trainer import ModelSpec, train
from training_app.trainer.models import encode_prompts, load_model
from training_app.trainer.reporter import RecordingReporter, step_line

PROMPT = ["zzt, a red circle"]


def test_sd15_clip_skip_2_is_the_penultimate_layer_through_the_final_layer_norm(tiny_sd15: Path) -> None:
    model = load_model(ModelSpec(tiny_sd15, "sd15"))
    encoder = model.text_encoders[0].eval()
    with torch.no_grad():
        skip1, _ = encode_prompts(model, PROMPT, "cpu", clip_skip=1)
        skip2, _ = encode_prompts(model, PROMPT, "cpu", clip_skip=2)
        ids = model.tokenizers[0](PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids
        states = encoder(ids, output_hidden_states=True).hidden_states
        norm = getattr(encoder, "text_model", encoder).final_layer_norm
    # A1111's "Clip skip 2" (and kohya's, and diffusers' clip_skip=1): layer -2, then the final norm.
    assert torch.allclose(skip2, norm(states[-2]), atol=1e-6)
    assert torch.allclose(skip1, norm(states[-1]), atol=1e-6)
    assert not torch.allclose(skip1, skip2, atol=1e-3)


def test_sdxl_clip_skip_2_matches_the_diffusers_pipeline_with_its_clip_skip_1(trainer_helpers, tiny_sdxl: Path) -> None:
    model = load_model(ModelSpec(tiny_sdxl, "sdxl"))
    pipe = trainer_helpers.load_pipeline(tiny_sdxl, "sdxl")
    with torch.no_grad():
        ours, ours_pooled = encode_prompts(model, PROMPT, "cpu", clip_skip=2)
        theirs, _, theirs_pooled, _ = pipe.encode_prompt(
            PROMPT[0], device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=False,
            clip_skip=1)
        default, _ = encode_prompts(model, PROMPT, "cpu", clip_skip=1)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.allclose(ours_pooled, theirs_pooled, atol=1e-6)  # the pooled projection is never skipped
    assert not torch.allclose(ours, default, atol=1e-3)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_clip_skip_2_trains_and_samples_on_other_text_features_and_is_recorded(
    make_spec, tiny_sd15: Path, tiny_sdxl: Path, tmp_path: Path, family: str
) -> None:
    base = tiny_sdxl if family == "sdxl" else tiny_sd15
    runs = {}
    for skip in (1, 2):
        runs[skip] = train(make_spec(out=tmp_path / str(skip), model=base, family=family, max_steps=2, clip_skip=skip,
                                     sample_every_n_steps=2, sample_prompts=["a red circle"], sample_steps=2))
    assert runs[1].losses[0] != runs[2].losses[0]
    images = [r.sample_paths[-1].read_bytes() for r in runs.values()]
    assert images[0] != images[1], "samples ignored clip_skip"
    with safe_open(str(runs[2].lora_kohya_path), framework="pt") as f:
        assert f.metadata()["ss_clip_skip"] == "2"


def test_step_line_reads_like_kohya_progress() -> None:
    assert step_line(450, 1000, 0.12345, 1e-4, 2.14) == "steps: 45% 450/1000, loss 0.123, lr 1.0e-4, 2.1 it/s"
    assert step_line(3, 7, 0.5, 3e-5, 0.25) == "steps: 42% 3/7, loss 0.500, lr 3.0e-5, 4.0 s/it"


def test_the_job_log_gets_a_step_line_at_each_interval_and_the_end(make_spec) -> None:
    reporter = RecordingReporter()
    result = train(make_spec(max_steps=5, log_every_n_steps=2), reporter)
    lines = [line for line in reporter.lines if line.startswith("steps: ")]
    pattern = r"steps: (\d+)% (\d)/5, loss (\d\.\d{3}), lr \d\.\de-\d+, \d+\.\d (it/s|s/it)"
    assert [re.fullmatch(pattern, line)[2] for line in lines] == ["2", "4", "5"]
    # Each line's loss is the mean of its interval's steps.
    assert float(re.fullmatch(pattern, lines[0])[3]) == pytest.approx(sum(result.losses[:2]) / 2, abs=5e-4)
    quiet = RecordingReporter()
    train(make_spec(max_steps=2, log_every_n_steps=0), quiet)
    assert not any(line.startswith("steps: ") for line in quiet.lines)
