"""Bad inputs fail early with messages a person can act on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training_app.trainer import ModelLoadError, TrainerConfigError, train
from training_app.trainer.config import DatasetItem, ModelSpec, TrainConfig, TrainSpec
from training_app.trainer.models import load_model


def test_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(ModelSpec(tmp_path / "nope", "sd15"))


def test_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "readme.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="not a diffusers model folder"):
        load_model(ModelSpec(tmp_path / "random", "sd15"))


def test_corrupt_safetensors(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelLoadError, match=r"not a valid \.safetensors file"):
        load_model(ModelSpec(bad, "sd15"))


def test_truncated_safetensors(tmp_path: Path, tiny_sd15: Path) -> None:
    data = (tiny_sd15 / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(ModelSpec(bad, "sd15"))


def test_lora_file_is_not_a_base_model(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    f = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(f))
    with pytest.raises(ModelLoadError, match="LoRA or an embedding"):
        load_model(ModelSpec(f, "sd15"))


def test_unknown_family(tiny_sd15: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown model family 'flux'"):
        load_model(ModelSpec(tiny_sd15, "flux"))


def test_wrong_family(tiny_sd15: Path, tiny_sdxl: Path) -> None:
    with pytest.raises(ModelLoadError, match="holds an sd15 model but the job says sdxl"):
        load_model(ModelSpec(tiny_sd15, "sdxl"))
    with pytest.raises(ModelLoadError, match="holds an sdxl model but the job says sd15"):
        load_model(ModelSpec(tiny_sdxl, "sd15"))


def test_broken_component_weights(tmp_path: Path, tiny_sd15: Path) -> None:
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(tiny_sd15, copy)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="could not load the sd15 model"):
        load_model(ModelSpec(copy, "sd15"))


def test_missing_image(tiny_sd15: Path, tmp_path: Path) -> None:
    spec = TrainSpec(
        ModelSpec(tiny_sd15),
        (DatasetItem(tmp_path / "gone.png", "x"),),
        TrainConfig(resolution=64),
        tmp_path / "out",
        device="cpu",
    )
    with pytest.raises(TrainerConfigError, match="training image not found"):
        train(spec)


def test_unreadable_image(tiny_sd15: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    spec = TrainSpec(
        ModelSpec(tiny_sd15),
        (DatasetItem(bad, "x"),),
        TrainConfig(resolution=64),
        tmp_path / "o",
        device="cpu",
    )
    with pytest.raises(TrainerConfigError, match=r"cannot read training image bad\.png"):
        train(spec)


def test_cuda_requested_without_gpu(make_spec) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    spec = make_spec()
    spec = TrainSpec(spec.model, spec.items, spec.config, spec.output_dir, device="cuda")
    with pytest.raises(TrainerConfigError, match="no CUDA GPU"):
        train(spec)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"learning_rte": 1e-4}, "unknown training config key.*learning_rte"),
        ({"rank": 0}, "rank must be one of 4, 8, 16, 32, 64, 128, not 0"),
        ({"rank": 4.5}, "rank must be a whole number"),
        ({"optimizer": "sgd"}, "optimizer must be one of adamw, adamw8bit, prodigy, lion"),
        ({"lr_scheduler": "step"}, "lr_scheduler must be one of"),
        ({"learning_rate": -1}, "learning_rate must be above 0 and at most 1"),
        ({"caption_dropout": 1.5}, "caption_dropout must be at least 0 and below 1"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of no, fp16, bf16"),
        ({"resolution": 500}, "resolution must be a multiple of 8"),
        ({"bucketing": "yes"}, "bucketing must be true or false"),
        ({"sample_prompts": "a cat"}, "sample_prompts must be a list of strings"),
        ({"prediction_type": "sample"}, "prediction_type must be epsilon, v_prediction or null"),
        ({"batch_size": 0}, "batch_size must be between 1 and 64"),
        ({"min_snr_gamma": 0}, "min_snr_gamma must be above 0 and at most 100"),
        ({"epochs": None}, "epochs must not be null"),
    ],
)
def test_bad_config_values(data: dict, message: str) -> None:
    with pytest.raises(TrainerConfigError, match=message):
        TrainConfig.from_dict(data)


def test_config_roundtrip_and_coercion() -> None:
    cfg = TrainConfig.from_dict({"rank": 8.0, "alpha": 4, "sample_prompts": ["a", "b"], "max_steps": None})
    assert cfg.rank == 8 and isinstance(cfg.rank, int) and cfg.alpha == 4.0
    assert cfg.sample_prompts == ("a", "b")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TrainConfig().effective_alpha == 16.0


def test_config_module_does_not_import_torch() -> None:
    code = (
        "import sys, training_app.trainer, training_app.trainer.config, training_app.trainer.reporter;"
        "print(any(m in sys.modules for m in ('torch', 'diffusers', 'django')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "False"


def test_empty_dataset_rejected(tiny_sd15: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainerConfigError, match="no images"):
        TrainSpec(ModelSpec(tiny_sd15), (), TrainConfig(), tmp_path)
