"""The portal's training config: key names, human messages, presets and planned steps."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lorasite.errors import InvalidInput
from training_app.config import TrainingConfig, validation_errors
from training_app.estimates import estimate, planned_total_steps
from training_app.presets import PRESETS
from training_app.services import build_config


def messages(**values) -> list[str]:
    with pytest.raises(ValidationError) as info:
        TrainingConfig(**values)
    return [e["msg"] for e in validation_errors(info.value)]


def test_rank_message_lists_the_allowed_values():
    assert messages(rank=5) == ["rank must be one of 4, 8, 16, 32, 64, 128"]


@pytest.mark.parametrize("field,value,fragment", [
    ("learning_rate", 0, "learning_rate must be above 0"),
    ("optimizer", "sgd", "optimizer must be one of adamw, adamw8bit, prodigy, lion"),
    ("lr_scheduler", "step", "lr_scheduler must be one of constant"),
    ("batch_size", 0, "batch_size must be between 1 and 64"),
    ("resolution", 500, "resolution must be a multiple of 8"),
    ("caption_dropout", 1.5, "caption_dropout must be at least 0 and below 1"),
    ("min_snr_gamma", -1, "min_snr_gamma must be above 0"),
    ("trigger_word", "a,b", "trigger_word must be at most 100 characters and contain no comma"),
    ("epochs", 0, "epochs must be between 1 and 1000"),
])
def test_each_bad_value_gets_a_message_naming_the_field(field, value, fragment):
    assert any(fragment in m for m in messages(**{field: value}))


def test_unknown_keys_are_refused_by_name():
    assert messages(learning_rat=1e-4) == ["unknown setting 'learning_rat'"]


def test_sampling_without_prompts_is_refused():
    assert any("sample prompt" in m for m in messages(sample_every_n_steps=10))


def test_trainer_accepts_every_portal_key():
    from training_app.trainer import TrainConfig

    config = TrainingConfig(rank=8, alpha=4, sample_every_n_steps=5, sample_prompts=["a cat"], max_steps=10)
    trainer_config = TrainConfig.from_dict(config.to_trainer_dict())
    assert trainer_config.rank == 8 and trainer_config.alpha == 4 and trainer_config.sample_prompts == ("a cat",)


def test_every_preset_is_a_valid_config():
    for name, preset in PRESETS.items():
        assert TrainingConfig(**preset["config"]), name


def test_caller_values_override_the_preset():
    config = build_config("sd15", {"rank": 4, "epochs": 2})
    assert (config.rank, config.epochs, config.resolution) == (4, 2, 512)


def test_unknown_preset_is_a_422():
    with pytest.raises(InvalidInput, match="Unknown preset"):
        build_config("turbo", {})


def test_max_steps_wins_over_epochs():
    assert TrainingConfig(max_steps=7, epochs=100).total_steps(50) == 7


def test_planned_steps_cut_batches_per_bucket_like_the_trainer():
    config = TrainingConfig(resolution=64, batch_size=2, epochs=3, repeats=1)
    square = {"width": 64, "height": 64, "repeats": 1}
    wide = {"width": 128, "height": 64, "repeats": 3}
    # 1 square (1 batch) + 3 wide in their own bucket (2 batches) = 3 batches per epoch.
    assert planned_total_steps(config, [square, wide]) == 9


def test_estimate_scales_with_gpu_and_flags_memory():
    config = TrainingConfig(resolution=1024, batch_size=4, rank=32)
    fast = estimate(config, 20, "sdxl", gpu="h100")
    slow = estimate(config, 20, "sdxl", gpu="t4")
    assert slow.estimated_seconds > 5 * fast.estimated_seconds
    assert not slow.fits_on_gpu and "gradient checkpointing" in slow.notes[0]
    assert fast.estimated_cost_usd is None
    paid = estimate(config, 20, "sdxl", gpu="h100", paid=True)
    assert paid.estimated_cost_usd and paid.estimated_cost_usd > 0


def test_sd15_anchor_matches_the_published_figure():
    config = TrainingConfig(resolution=512, batch_size=1, rank=16, mixed_precision="bf16")
    assert estimate(config, 10, "sd15", gpu="h100").seconds_per_step == pytest.approx(0.181 * 1.0125, rel=1e-3)
