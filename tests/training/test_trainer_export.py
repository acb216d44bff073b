"""The two LoRA files reload into a fresh diffusers pipeline and reproduce the trained model exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from training_app.trainer import train

ATOL = 1e-5


def _check_roundtrip(h, result, base: Path, family: str, train_te: bool) -> None:
    load_pipeline, model_outputs, reference_pipeline = h.load_pipeline, h.model_outputs, h.reference_pipeline
    ref_unet, ref_te = model_outputs(reference_pipeline(base, family, result.checkpoint_path))
    base_unet, base_te = model_outputs(load_pipeline(base, family))
    assert not torch.allclose(ref_unet, base_unet, atol=1e-3), "training changed nothing"
    if train_te:
        assert all(not torch.allclose(r, b, atol=1e-3) for r, b in zip(ref_te, base_te, strict=True))
    for path in (result.lora_diffusers_path, result.lora_kohya_path):
        pipe = load_pipeline(base, family)
        pipe.load_lora_weights(str(path))
        unet_out, te_out = model_outputs(pipe)
        assert torch.allclose(unet_out, ref_unet, atol=ATOL), (path.name, (unet_out - ref_unet).abs().max())
        for got, want in zip(te_out, ref_te, strict=True):
            assert torch.allclose(got, want, atol=ATOL), (path.name, (got - want).abs().max())


def _check_kohya_keys(path: Path, expect_prefixes: set[str], rank: int, alpha: float) -> None:
    sd = load_file(str(path))
    downs = {k[: -len(".lora_down.weight")] for k in sd if k.endswith(".lora_down.weight")}
    assert downs, "no LoRA modules"
    for name in downs:
        assert f"{name}.lora_up.weight" in sd and f"{name}.alpha" in sd, name
        assert sd[f"{name}.lora_down.weight"].shape[0] == rank
        assert sd[f"{name}.alpha"].item() == pytest.approx(alpha)
    assert len(sd) == 3 * len(downs), "stray keys"
    assert {n.split("_")[0] + "_" + n.split("_")[1] + "_" for n in downs} == expect_prefixes


@pytest.mark.parametrize(("rank", "alpha"), [(4, 4), (4, 1), (8, 16)])
def test_sd15_unet_lora_roundtrip(
    trainer_helpers, make_spec, tiny_sd15: Path, tmp_path: Path, rank: int, alpha: float
) -> None:
    result = train(make_spec(rank=rank, alpha=alpha, max_steps=3, learning_rate=2e-2))
    _check_roundtrip(trainer_helpers, result, tiny_sd15, "sd15", train_te=False)
    _check_kohya_keys(result.lora_kohya_path, {"lora_unet_"}, rank, alpha)
    # Every targeted module of the UNet is in both files.
    unet = trainer_helpers.load_pipeline(tiny_sd15, "sd15").unet
    targets = [n for n, _ in unet.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))]
    n_kohya = len([k for k in load_file(str(result.lora_kohya_path)) if k.endswith(".alpha")])
    n_diffusers = len(
        [
            k
            for k in load_file(str(result.lora_diffusers_path))
            if k.endswith(("down.weight", "lora_A.weight"))
        ]
    )
    assert n_kohya == n_diffusers == len(targets) == 32


def test_sd15_text_encoder_lora_roundtrip(trainer_helpers, make_spec, tiny_sd15: Path) -> None:
    result = train(
        make_spec(
            rank=4, alpha=2, max_steps=3, learning_rate=2e-2, train_text_encoder=True, text_encoder_lr=1e-2
        )
    )
    _check_roundtrip(trainer_helpers, result, tiny_sd15, "sd15", train_te=True)
    _check_kohya_keys(result.lora_kohya_path, {"lora_unet_", "lora_te_"}, 4, 2)
    assert any(
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in k
        for k in load_file(str(result.lora_kohya_path))
    )


def test_sdxl_lora_roundtrip(trainer_helpers, make_spec, tiny_sdxl: Path) -> None:
    result = train(
        make_spec(
            model=tiny_sdxl,
            family="sdxl",
            rank=4,
            alpha=8,
            max_steps=2,
            learning_rate=2e-2,
            train_text_encoder=True,
        )
    )
    _check_roundtrip(trainer_helpers, result, tiny_sdxl, "sdxl", train_te=True)
    _check_kohya_keys(result.lora_kohya_path, {"lora_unet_", "lora_te1_", "lora_te2_"}, 4, 8)
    keys = load_file(str(result.lora_kohya_path))
    # SDXL kohya files use the original sgm block names, like sd-scripts writes them.
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert any(k.startswith("lora_unet_output_blocks_") for k in keys)
    assert any(k.startswith("lora_unet_middle_block_1_") for k in keys)
    assert not any("down_blocks" in k for k in keys)


def test_metadata_header(make_spec, tmp_path: Path) -> None:
    meta_in = {"job_id": "job-42", "dataset_sha256": "ab" * 32, "output_name": "my_lora"}
    result = train(make_spec(max_steps=3, trigger_word="zzt", seed=7, learning_rate=1e-3, metadata=meta_in))
    assert result.lora_kohya_path.name == "my_lora.safetensors"
    for path in (result.lora_kohya_path, result.lora_diffusers_path):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        assert all(isinstance(v, str) for v in meta.values())
        assert meta["ss_network_module"] == "networks.lora"
        assert meta["ss_network_dim"] == "4"
        assert float(meta["ss_network_alpha"]) == 4.0
        assert meta["ss_base_model_version"] == "sd_v1"
        assert meta["ss_resolution"] == "(64, 64)"
        assert meta["ss_num_train_images"] == "4"
        assert meta["ss_steps"] == "3"
        assert meta["ss_seed"] == "7"
        assert float(meta["ss_learning_rate"]) == 1e-3
        assert meta["ss_output_name"] == "my_lora"
        assert int(meta["ss_epoch"]) >= 1
        started, finished = float(meta["ss_training_started_at"]), float(meta["ss_training_finished_at"])
        assert 0 < started <= finished
        freq = json.loads(meta["ss_tag_frequency"])["my_lora"]
        assert freq["zzt"] == 4 and freq["circle"] == 2 and freq["simple"] == 4
        assert meta["lorasite_trigger_word"] == "zzt"
        assert meta["lorasite_job_id"] == "job-42"
        assert meta["lorasite_dataset_sha256"] == "ab" * 32
    with safe_open(str(result.lora_diffusers_path), framework="pt") as f:
        assert "lora_adapter_metadata" in f.metadata()
    assert result.metadata["lorasite_job_id"] == "job-42"


def test_dataset_sha256_computed_when_missing(make_spec) -> None:
    result = train(make_spec(max_steps=1))
    sha = result.metadata["lorasite_dataset_sha256"]
    assert len(sha) == 64 and int(sha, 16) >= 0
    again = train(make_spec(max_steps=1, out=result.lora_kohya_path.parent.parent / "again"))
    assert again.metadata["lorasite_dataset_sha256"] == sha
