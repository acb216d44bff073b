"""Every network (LoRA, LoCon, LoHa, LoKr, DoRA) trains on the layers its preset names and resumes bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training_app.trainer import TrainConfig, TrainerConfigError, train
from training_app.trainer.checkpoint import CheckpointError

NETWORKS = {
    "lora": {"network": "lora"},
    "locon": {"network": "locon", "conv_rank": 8, "conv_alpha": 2},
    "loha": {"network": "loha", "target_layers": "all_linear_conv", "conv_rank": 8},
    "lokr": {"network": "lokr", "target_layers": "attention_mlp", "factor": 4},
    "dora": {"network": "lora", "dora": True, "train_text_encoder": True},
    "locon_dora": {"network": "locon", "dora": True},
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_trains_and_resumes_bit_exactly(make_spec, tmp_path: Path, name: str) -> None:
    options = {**NETWORKS[name], "learning_rate": 1e-2}
    whole = train(make_spec(out=tmp_path / "whole", max_steps=4, save_every_n_steps=2, **options))
    mid = whole.checkpoint_path.parent / "step-00000002"
    resumed = train(make_spec(out=tmp_path / "resumed", max_steps=4, resume_from=mid, **options))
    assert list(resumed.losses) == list(whole.losses[2:])
    a, b = load_file(str(whole.lora_kohya_path)), load_file(str(resumed.lora_kohya_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    changed = [k for k in a if not k.endswith((".alpha", "dora_scale")) and a[k].abs().sum() > 0]
    assert changed, "training left every adapter at zero"


def _adapted(make_spec, tmp_path: Path, **options) -> dict[str, tuple[str, int]]:
    """Module path -> (base layer type, rank) of every layer the run put an adapter on."""
    from training_app.trainer.loop import _Run
    from training_app.trainer.lora import adapter_layers
    from training_app.trainer.reporter import NullReporter

    run = _Run(make_spec(out=tmp_path / "inspect", max_steps=1, **options), NullReporter())
    return {f"{component}:{path}": (type(layer.get_base_layer()).__name__, layer.r["default"])
            for component, module in run.components.items() for path, layer in adapter_layers(module)}


def test_target_presets_add_layers_in_order(make_spec, tmp_path: Path) -> None:
    attention = _adapted(make_spec, tmp_path, train_text_encoder=True)
    assert all(p.endswith(("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj"))
               for p in attention)
    mlp = _adapted(make_spec, tmp_path, target_layers="attention_mlp", train_text_encoder=True)
    assert set(attention) < set(mlp)
    assert any(p.endswith("ff.net.2") for p in mlp) and any(p.endswith("mlp.fc1") for p in mlp)
    linear = _adapted(make_spec, tmp_path, target_layers="all_linear")
    assert any(p.endswith("time_emb_proj") for p in linear)
    # SD 1.5's proj_in is a 1x1 convolution: kohya counts it as linear, and so do we (main rank).
    assert {linear[p] for p in linear if p.endswith("proj_in")} == {("Conv2d", 4)}
    assert not any(p.endswith("conv1") for p in linear)


def test_locon_trains_convolutions_with_their_own_rank(make_spec, tmp_path: Path) -> None:
    locon = _adapted(make_spec, tmp_path, network="locon", conv_rank=8)
    assert {locon[p] for p in locon if p.endswith(("conv1", "conv2", "downsamplers.0.conv", "upsamplers.0.conv"))} \
        == {("Conv2d", 8)}
    assert {locon[p] for p in locon if p.endswith("conv_shortcut")} == {("Conv2d", 4)}  # 1x1: main rank
    assert {locon[p] for p in locon if p.endswith("to_q")} == {("Linear", 4)}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"network": "loha", "dora": True}, "dora works with network lora or locon"),
        ({"network": "lora", "target_layers": "all_linear_conv"}, "choose network locon"),
        ({"network": "lokr", "factor": 0}, "factor must be -1"),
        ({"network": "lokr", "factor": -2}, "factor must be -1"),
        ({"target_layers": "all_linear", "target_modules": ["to_q"]}, "not both"),
        ({"network": "ia3"}, "network must be one of lora, locon, loha, lokr"),
        ({"clip_skip": 3}, "clip_skip must be one of 1, 2"),
        ({"conv_rank": 7}, "conv_rank must be one of"),
    ],
)
def test_inconsistent_network_settings_are_refused_with_the_reason(options: dict, message: str) -> None:
    with pytest.raises(TrainerConfigError, match=message):
        TrainConfig.from_dict(options)


def test_resuming_with_another_network_is_refused(make_spec, tmp_path: Path) -> None:
    first = train(make_spec(out=tmp_path / "a", max_steps=2, network="locon"))
    with pytest.raises(CheckpointError, match="network"):
        train(make_spec(out=tmp_path / "b", max_steps=3, network="loha", resume_from=first.checkpoint_path))


def test_a_checkpoint_from_before_networks_existed_still_resumes(make_spec, tmp_path: Path) -> None:
    import json

    first = train(make_spec(out=tmp_path / "a", max_steps=2))
    meta_path = first.checkpoint_path / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("network", "dora", "target_layers", "conv_rank", "conv_alpha", "factor", "clip_skip"):
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    again = train(make_spec(out=tmp_path / "b", max_steps=3, resume_from=first.checkpoint_path))
    assert again.steps_completed == 3 and len(again.losses) == 1


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("name", [*NETWORKS, "lokr_full"])
def test_the_size_estimate_counts_exactly_the_numbers_the_trainer_trains(
    make_spec, tiny_sd15: Path, tiny_sdxl: Path, tmp_path: Path, family: str, name: str
) -> None:
    from training_app.trainer.layer_shapes import adapter_parameters
    from training_app.trainer.loop import _Run
    from training_app.trainer.reporter import NullReporter

    options = {"network": "lokr", "rank": 64} if name == "lokr_full" else NETWORKS[name]
    spec = make_spec(out=tmp_path / "count", model=tiny_sdxl if family == "sdxl" else tiny_sd15, family=family,
                     max_steps=1, **{"train_text_encoder": True, **options})
    run = _Run(spec, NullReporter())
    trained = sum(p.numel() for module in run.components.values() for p in module.parameters() if p.requires_grad)
    encoders = tuple((e.config.hidden_size, e.config.intermediate_size, e.config.num_hidden_layers)
                     for e in run.model.text_encoders)
    assert adapter_parameters(spec.config, family, unet_config=dict(run.model.unet.config), encoders=encoders) == trained
