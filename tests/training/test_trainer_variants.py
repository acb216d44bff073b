"""Each objective / optimizer / schedule option runs a couple of steps and produces finite losses."""

from __future__ import annotations

import math

import pytest

from training_app.trainer import TrainerConfigError, train
from training_app.trainer.config import SCHEDULERS


def _finite(result) -> bool:
    return result.steps_completed == len(result.losses) and all(math.isfinite(x) for x in result.losses)


@pytest.mark.parametrize(
    "options",
    [
        {"min_snr_gamma": 5.0},
        {"min_snr_gamma": 5.0, "prediction_type": "v_prediction"},
        {"noise_offset": 0.1},
        {"prediction_type": "v_prediction"},
        {"gradient_accumulation_steps": 2, "batch_size": 2},
        {"gradient_checkpointing": True, "train_text_encoder": True},
        {"cache_latents": False, "flip_aug": True},
        {"cache_to_disk": True, "flip_aug": True},
        {"bucketing": False},
        {"mixed_precision": "bf16"},
        {"max_grad_norm": None, "dropout": 0.2},
        {"target_modules": ["to_q", "to_v", "proj_in", "proj_out"]},
    ],
    ids=lambda o: ",".join(o),
)
def test_option_runs(make_spec, options: dict) -> None:
    assert _finite(train(make_spec(max_steps=2, **options)))


@pytest.mark.parametrize("optimizer", ["adamw", "prodigy", "lion"])
def test_optimizers_run(make_spec, optimizer: str) -> None:
    lr = {"adamw": 1e-3, "prodigy": 1.0, "lion": 1e-4}[optimizer]
    assert _finite(train(make_spec(max_steps=2, optimizer=optimizer, learning_rate=lr)))


def test_adamw8bit_refuses_cpu(make_spec) -> None:
    with pytest.raises(TrainerConfigError, match="adamw8bit needs a CUDA GPU"):
        train(make_spec(max_steps=1, optimizer="adamw8bit"))


def test_fp16_refuses_cpu(make_spec) -> None:
    with pytest.raises(TrainerConfigError, match="mixed_precision fp16 needs a CUDA GPU"):
        train(make_spec(max_steps=1, mixed_precision="fp16"))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_schedulers_run(make_spec, scheduler: str) -> None:
    from training_app.trainer.reporter import RecordingReporter

    rep = RecordingReporter()
    assert _finite(train(make_spec(max_steps=3, lr_scheduler=scheduler, lr_warmup_steps=1), rep))
    lrs = [s[3] for s in rep.steps]
    if scheduler != "constant":
        assert (lrs[0] > 0 and lrs != [lrs[0]] * 3) or scheduler == "constant_with_warmup"


def test_disk_cache_is_reused(make_spec, tmp_path) -> None:
    from training_app.trainer.reporter import RecordingReporter

    first, second = RecordingReporter(), RecordingReporter()
    a = train(make_spec(out=tmp_path / "o", max_steps=2, cache_to_disk=True, flip_aug=True), first)
    b = train(make_spec(out=tmp_path / "o", max_steps=2, cache_to_disk=True, flip_aug=True), second)
    assert any("8 encoded, 0 reused" in line for line in first.lines)
    assert any("0 encoded, 8 reused" in line for line in second.lines)
    assert a.losses == b.losses
    memory = train(make_spec(out=tmp_path / "m", max_steps=2, flip_aug=True))
    assert memory.losses == pytest.approx(a.losses, abs=1e-6)


def test_uncached_latents_match_cached(make_spec, tmp_path) -> None:
    cached = train(make_spec(out=tmp_path / "c", max_steps=3))
    live = train(make_spec(out=tmp_path / "l", max_steps=3, cache_latents=False))
    assert live.losses == pytest.approx(cached.losses, abs=1e-5)
