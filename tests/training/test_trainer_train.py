"""End-to-end behaviour of train(): learning, determinism, resume, stop/sample/save actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from training_app.trainer import latest_checkpoint, train
from training_app.trainer.reporter import RecordingReporter


def test_loss_goes_down(make_spec, tmp_path: Path) -> None:
    rep = RecordingReporter()
    result = train(make_spec(max_steps=100, learning_rate=5e-3, batch_size=1), rep)
    losses = rep.losses
    assert len(losses) == 100 and result.steps_completed == 100
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    # Fixed seed: first ~1.05, last ~0.82 (a 22% drop); demand a clear 10% drop.
    assert last < 0.9 * first, (first, last)
    assert result.final_loss == losses[-1]
    assert result.avg_loss == pytest.approx(sum(losses) / len(losses))


def test_same_seed_same_losses(make_spec, tmp_path: Path) -> None:
    kw = {"max_steps": 6, "flip_aug": True, "caption_dropout": 0.3, "shuffle_tags": True, "batch_size": 2}
    a = train(make_spec(out=tmp_path / "a", **kw))
    b = train(make_spec(out=tmp_path / "b", **kw))
    c = train(make_spec(out=tmp_path / "c", **{**kw, "seed": 99}))
    assert a.losses == b.losses
    assert a.losses != c.losses
    wa, wb = load_file(str(a.lora_kohya_path)), load_file(str(b.lora_kohya_path))
    assert all((wa[k] == wb[k]).all() for k in wa)


@pytest.mark.parametrize(
    "extra", [{}, {"train_text_encoder": True, "dropout": 0.1, "gradient_accumulation_steps": 2}]
)
def test_resume_matches_uninterrupted_run(make_spec, tmp_path: Path, extra: dict) -> None:
    # Shuffling, flips, caption dropout and tag shuffle all draw randomness: resume must replay it.
    kw = {
        "max_steps": 8,
        "save_every_n_steps": 4,
        "flip_aug": True,
        "caption_dropout": 0.25,
        "shuffle_tags": True,
        "keep_tokens": 1,
        "trigger_word": "zzt",
        "batch_size": 2,
        **extra,
    }
    full = train(make_spec(out=tmp_path / "full", **kw))
    half = tmp_path / "full" / "checkpoints" / "step-00000004"
    assert half.is_dir()
    resumed = train(make_spec(out=tmp_path / "resumed", resume_from=half, **kw))
    assert resumed.steps_completed == 8
    assert list(resumed.losses) == list(full.losses[4:])
    assert resumed.avg_loss == pytest.approx(full.avg_loss, abs=1e-9)
    wf, wr = load_file(str(full.lora_kohya_path)), load_file(str(resumed.lora_kohya_path))
    assert wf.keys() == wr.keys()
    for k in wf:
        assert (wf[k] - wr[k]).abs().max().item() <= 1e-6, k


def test_resume_refuses_changed_settings(make_spec, tmp_path: Path) -> None:
    from training_app.trainer.checkpoint import CheckpointError

    first = train(make_spec(out=tmp_path / "a", max_steps=2))
    with pytest.raises(CheckpointError, match="rank"):
        train(make_spec(out=tmp_path / "b", max_steps=4, rank=8, resume_from=first.checkpoint_path))


def test_should_stop_saves_checkpoint_and_lora(make_spec, tmp_path: Path) -> None:
    rep = RecordingReporter(stop_at=3)
    result = train(make_spec(max_steps=50), rep)
    assert result.stopped is True
    assert result.steps_completed == 3 and rep.last_step == 3
    assert result.checkpoint_path is not None and result.checkpoint_path.name == "step-00000003"
    assert latest_checkpoint(result.checkpoint_path.parent.parent) == result.checkpoint_path
    assert result.lora_kohya_path.is_file() and result.lora_diffusers_path.is_file()
    assert rep.checkpoints and rep.checkpoints[-1][0] == 3
    # The save on stop is announced like any other.
    assert rep.lora_files == [("kohya", result.lora_kohya_path, 3), ("diffusers", result.lora_diffusers_path, 3)]


def test_reporter_is_told_of_every_lora_file_the_trainer_writes(make_spec, tmp_path: Path) -> None:
    rep = RecordingReporter(actions_at={2: frozenset({"save"})})
    result = train(make_spec(max_steps=4, metadata={"output_name": "shapes"}), rep)
    kohya, diffusers = result.lora_kohya_path, result.lora_diffusers_path
    assert kohya.name == "shapes.safetensors" and diffusers.name == "pytorch_lora_weights.safetensors"
    # "Save now" at step 2, then the final save: each write is reported with its kind and step.
    assert rep.lora_files == [("kohya", kohya, 2), ("diffusers", diffusers, 2),
                              ("kohya", kohya, 4), ("diffusers", diffusers, 4)]


def test_pending_sample_and_save_actions(make_spec, tmp_path: Path) -> None:
    rep = RecordingReporter(actions_at={2: frozenset({"sample"}), 3: frozenset({"save"})})
    result = train(make_spec(max_steps=4, sample_steps=2, sample_prompts=["zzt, red circle"]), rep)
    assert [(s, prompt) for s, prompt, _ in rep.samples] == [(2, "zzt, red circle")]
    png = rep.samples[0][2]
    assert png.suffix == ".png" and png.is_file() and png.parent.name == "samples"
    assert 3 in [s for s, _ in rep.checkpoints]
    assert result.sample_paths == (png,)


def test_sample_every_n_steps_renders_pngs(make_spec, tmp_path: Path) -> None:
    from PIL import Image

    rep = RecordingReporter()
    result = train(
        make_spec(max_steps=4, sample_every_n_steps=2, sample_steps=2, sample_prompts=["a", "b"]), rep
    )
    # Each sample comes with the prompt that rendered it.
    assert [(s, prompt) for s, prompt, _ in rep.samples] == [(2, "a"), (2, "b"), (4, "a"), (4, "b")]
    for _, _, path in rep.samples:
        with Image.open(path) as img:
            assert img.size == (64, 64) and img.format == "PNG"
    assert len(result.sample_paths) == 4


def test_sampling_does_not_change_training(make_spec, tmp_path: Path) -> None:
    plain = train(make_spec(out=tmp_path / "plain", max_steps=4, dropout=0.1))
    sampled = train(
        make_spec(out=tmp_path / "s", max_steps=4, dropout=0.1, sample_every_n_steps=1, sample_steps=1)
    )
    assert plain.losses == sampled.losses


def test_sdxl_trains(tiny_sdxl: Path, make_spec, tmp_path: Path) -> None:
    result = train(make_spec(model=tiny_sdxl, family="sdxl", max_steps=3, flip_aug=True, batch_size=2))
    assert result.steps_completed == 3 and all(loss == loss for loss in result.losses)
