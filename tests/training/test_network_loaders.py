"""Each network's file loads the way the loaders load it and reproduces the trained model.

ComfyUI's rules are re-stated here from its source (``comfy/lora.py``: the key maps; ``comfy/utils.py``:
``unet_to_diffusers``; ``comfy/weight_adapter/{lora,loha,lokr,base}.py``: the patch maths), independently of our
exporter: a file key is mapped to an original (LDM) weight name the way ComfyUI does, the weight is patched the
way ComfyUI patches it, and the patched UNet and text encoders must give our trained model's outputs. diffusers
is used as itself (``load_lora_weights``) for the layouts it takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from training_app.trainer import train

ATOL = 1e-5
NETWORKS = {
    "lora": {"network": "lora", "target_layers": "all_linear"},
    "locon": {"network": "locon", "conv_rank": 8, "conv_alpha": 2, "target_layers": "attention_mlp"},
    "loha": {"network": "loha", "target_layers": "all_linear_conv", "conv_rank": 8},
    "lokr": {"network": "lokr", "target_layers": "all_linear_conv", "factor": 4},
    "lokr_full": {"network": "lokr", "rank": 64, "alpha": 8},  # rank >= half the factors: both factors full
    "dora": {"network": "lora", "dora": True},
    "locon_dora": {"network": "locon", "dora": True, "conv_rank": 8},
}
DIFFUSERS_LOADS = {"lora": ("kohya", "diffusers"), "locon": ("kohya", "diffusers"), "dora": ("diffusers",),
                   "locon_dora": ("diffusers",)}

# --- ComfyUI's UNet key rules (comfy/utils.py unet_to_diffusers, comfy/lora.py model_lora_keys_unet) -------------
RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.0": "norm2",
          "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
ATTENTION = ("proj_in", "proj_out", "norm")
BLOCK = ("norm1", "norm2", "norm3", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q",
         "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


def comfy_unet_config(cfg: Any) -> dict:
    """The LDM-style config ComfyUI detects for a UNet (output depths listed high resolution first)."""
    blocks, lpb = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    depth = cfg["transformer_layers_per_block"]
    depth = [depth] * blocks if isinstance(depth, int) else list(depth)
    down = [depth[b] if "CrossAttn" in cfg["down_block_types"][b] else 0 for b in range(blocks) for _ in range(lpb)]
    up_depth = depth[::-1]
    up = [up_depth[b] if "CrossAttn" in cfg["up_block_types"][b] else 0 for b in range(blocks) for _ in range(lpb + 1)]
    return {"num_res_blocks": [lpb] * blocks, "transformer_depth": down, "transformer_depth_output": up[::-1],
            "transformer_depth_middle": depth[-1]}


def comfy_unet_to_diffusers(conf: dict) -> dict[str, str]:
    """diffusers module path -> LDM module path, by ComfyUI's numbering (modules, not .weight keys)."""
    out: dict[str, str] = {}
    res, depth, depth_out = conf["num_res_blocks"], list(conf["transformer_depth"]), list(conf["transformer_depth_output"])

    def attention(src: str, dst: str, count: int) -> None:
        for name in ATTENTION:
            out[f"{src}.{name}"] = f"{dst}.{name}"
        for t in range(count):
            for name in BLOCK:
                out[f"{src}.transformer_blocks.{t}.{name}"] = f"{dst}.transformer_blocks.{t}.{name}"

    for x, layers in enumerate(res):
        n = 1 + (layers + 1) * x
        for i in range(layers):
            out.update({f"down_blocks.{x}.resnets.{i}.{d}": f"input_blocks.{n}.0.{s}" for s, d in RESNET.items()})
            count = depth.pop(0)
            if count:
                attention(f"down_blocks.{x}.attentions.{i}", f"input_blocks.{n}.1", count)
            n += 1
        out[f"down_blocks.{x}.downsamplers.0.conv"] = f"input_blocks.{n}.0.op"
    attention("mid_block.attentions.0", "middle_block.1", conf["transformer_depth_middle"])
    for i, n in enumerate((0, 2)):
        out.update({f"mid_block.resnets.{i}.{d}": f"middle_block.{n}.{s}" for s, d in RESNET.items()})
    for x, layers in enumerate(reversed(res)):
        n = (layers + 1) * x
        for i in range(layers + 1):
            out.update({f"up_blocks.{x}.resnets.{i}.{d}": f"output_blocks.{n}.0.{s}" for s, d in RESNET.items()})
            slot = 1
            count = depth_out.pop()
            if count:
                slot = 2
                attention(f"up_blocks.{x}.attentions.{i}", f"output_blocks.{n}.1", count)
            if i == layers:
                out[f"up_blocks.{x}.upsamplers.0.conv"] = f"output_blocks.{n}.{slot}.conv"
            n += 1
    return out


def comfy_key_map(unet: Any, encoders: list[Any]) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """LoRA module name -> ComfyUI weight key, and ComfyUI weight key -> (our component, our parameter name)."""
    ours = {name for name, _ in unet.named_modules()}
    d2l = {d: ldm for d, ldm in comfy_unet_to_diffusers(comfy_unet_config(unet.config)).items() if d in ours}
    key_map, target = {}, {}
    for diffusers, ldm in d2l.items():
        weight = f"diffusion_model.{ldm}.weight"
        key_map["lora_unet_" + ldm.replace(".", "_")] = weight  # the LDM spelling (SDXL files)
        key_map["lora_unet_" + diffusers.replace(".", "_")] = weight  # the diffusers spelling (SD 1.5 files)
        target[weight] = ("unet", f"{diffusers}.weight")
    clip_map = ("mlp.fc1", "mlp.fc2", "self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj", "self_attn.out_proj")
    for index, encoder in enumerate(encoders):
        clip = "clip_l" if index == 0 else "clip_g"
        prefixes = ("lora_te_", "lora_te1_") if index == 0 else ("lora_te2_",)
        for layer in range(encoder.config.num_hidden_layers):
            for part in clip_map:
                weight = f"{clip}.transformer.text_model.encoder.layers.{layer}.{part}.weight"
                for prefix in prefixes:
                    key_map[f"{prefix}text_model_encoder_layers_{layer}_{part.replace('.', '_')}"] = weight
                own = f"encoder.layers.{layer}.{part}.weight"  # transformers 5 CLIPTextModel has no text_model.
                if any(n == f"text_model.{own}" for n, _ in encoder.named_parameters()):
                    own = f"text_model.{own}"
                target[weight] = ("text_encoder" if index == 0 else "text_encoder_2", own)
    return key_map, target


# --- ComfyUI's patch maths (comfy/weight_adapter) --------------------------------------------------------------
def comfy_load(lora: dict[str, Any], key_map: dict[str, str]) -> tuple[dict[str, tuple], set[str]]:
    """ComfyUI's load_lora: which patch each weight gets, and which file keys it used."""
    patches, used = {}, set()
    for name, weight in key_map.items():
        alpha = lora[f"{name}.alpha"].item() if f"{name}.alpha" in lora else None
        dora = lora.get(f"{name}.dora_scale")
        found = {k[len(name) + 1:]: v for k, v in lora.items() if k.startswith(f"{name}.")}
        if not found:
            continue
        used |= {f"{name}.{suffix}" for suffix in found}
        if "lora_up.weight" in found:
            patches[weight] = ("lora", found["lora_up.weight"], found["lora_down.weight"], alpha, dora)
        elif "hada_w1_a" in found:
            patches[weight] = ("loha", found["hada_w1_a"], found["hada_w1_b"], found["hada_w2_a"], found["hada_w2_b"],
                               alpha, dora)
        else:
            patches[weight] = ("lokr", *(found.get(k) for k in ("lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b",
                                                                "lokr_w2_a", "lokr_w2_b")), alpha, dora)
    return patches, used


def comfy_decompose(dora: Any, weight: Any, diff: Any) -> Any:
    """comfy/weight_adapter/base.py weight_decompose at strength 1 (``diff`` already scaled by alpha)."""
    calc = weight + diff
    if dora.shape[0] == calc.shape[0]:  # "wd on output axis": divides by the norm of the ORIGINAL weight
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True)
        norm = norm.reshape(calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1)
    return calc * (dora / (norm + torch.finfo(weight.dtype).eps))


def comfy_patch(weight: Any, patch: tuple) -> Any:
    kind, *v = patch
    if kind == "lora":
        up, down, alpha, dora = v
        scale = 1.0 if alpha is None else alpha / down.shape[0]
        diff = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    elif kind == "loha":
        w1a, w1b, w2a, w2b, alpha, dora = v
        scale = 1.0 if alpha is None else alpha / w1b.shape[0]
        diff = ((w1a @ w1b) * (w2a @ w2b)).reshape(weight.shape)
    else:
        w1, w2, w1a, w1b, w2a, w2b, alpha, dora = v
        dim = None
        if w1 is None:
            dim, w1 = w1b.shape[0], w1a @ w1b
        if w2 is None:
            dim, w2 = w2b.shape[0], w2a @ w2b
        if w2.dim() == 4:
            w1 = w1.unsqueeze(2).unsqueeze(2)
        scale = alpha / dim if alpha is not None and dim is not None else 1.0
        diff = torch.kron(w1, w2).reshape(weight.shape)
    if dora is not None:
        return comfy_decompose(dora, weight, scale * diff)
    return weight + scale * diff


def comfy_apply(pipe: Any, path: Path) -> set[str]:
    """Patch a fresh pipeline's weights from ``path`` as ComfyUI would; returns the file keys it did not load."""
    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    modules = {"unet": pipe.unet, "text_encoder": encoders[0], "text_encoder_2": encoders[-1]}
    lora = load_file(str(path))
    key_map, target = comfy_key_map(pipe.unet, encoders)
    patches, used = comfy_load(lora, key_map)
    with torch.no_grad():
        for weight_key, patch in patches.items():
            component, name = target[weight_key]
            param = modules[component].get_parameter(name)
            param.copy_(comfy_patch(param.detach().clone(), patch))
    return set(lora) - used


# --- the tests --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(trainer_helpers, tiny_sd15: Path, tiny_sdxl: Path, dataset, tmp_path_factory):
    """Train each (network, family) once for this module: ``(result, base, reference outputs)``."""
    from training_app.trainer import ModelSpec, TrainConfig, TrainSpec

    runs: dict[tuple[str, str], tuple] = {}

    def get(name: str, family: str) -> tuple:
        if (name, family) not in runs:
            base = tiny_sdxl if family == "sdxl" else tiny_sd15
            config = TrainConfig.from_dict({"rank": 4, "resolution": 64, "seed": 3, "max_steps": 3, "learning_rate": 2e-2, "train_text_encoder": True,
                                            "text_encoder_lr": 1e-2, **NETWORKS[name]})
            out = tmp_path_factory.mktemp(f"{name}-{family}")
            result = train(TrainSpec(ModelSpec(base, family), dataset, config, out, device="cpu"))
            h = trainer_helpers
            reference = h.model_outputs(h.reference_pipeline(base, family, result.checkpoint_path))
            runs[(name, family)] = (result, base, reference)
        return runs[(name, family)]

    return get


def _assert_same_model(h, pipe, reference: tuple, what: str) -> None:
    unet_out, te_out = h.model_outputs(pipe)
    ref_unet, ref_te = reference
    assert torch.allclose(unet_out, ref_unet, atol=ATOL), (what, (unet_out - ref_unet).abs().max())
    for got, want in zip(te_out, ref_te, strict=True):
        assert torch.allclose(got, want, atol=ATOL), (what, (got - want).abs().max())


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_comfyui_rules_map_every_key_and_reproduce_the_trained_model(trainer_helpers, trained, family, name) -> None:
    h = trainer_helpers
    result, base, reference = trained(name, family)
    untouched = h.model_outputs(h.load_pipeline(base, family))
    assert not torch.allclose(reference[0], untouched[0], atol=1e-3), "training changed nothing"
    assert all(not torch.allclose(r, u, atol=1e-3) for r, u in zip(reference[1], untouched[1], strict=True))
    pipe = h.load_pipeline(base, family)
    assert comfy_apply(pipe, result.lora_kohya_path) == set(), "ComfyUI would warn 'lora key not loaded'"
    _assert_same_model(h, pipe, reference, f"{name} via ComfyUI rules")


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("name", list(DIFFUSERS_LOADS))
def test_diffusers_load_lora_weights_reproduces_the_trained_model(trainer_helpers, trained, family, name) -> None:
    h = trainer_helpers
    result, base, reference = trained(name, family)
    files = {"kohya": result.lora_kohya_path, "diffusers": result.lora_diffusers_path}
    for layout in DIFFUSERS_LOADS[name]:
        pipe = h.load_pipeline(base, family)
        pipe.load_lora_weights(str(files[layout]))
        _assert_same_model(h, pipe, reference, f"{name} {layout} file via diffusers")


@pytest.mark.parametrize(
    ("name", "module", "args"),
    [
        ("lora", "networks.lora", None),
        ("locon", "lycoris.kohya", {"algo": "locon", "conv_dim": "8", "conv_alpha": "2.0"}),
        ("loha", "lycoris.kohya", {"algo": "loha", "conv_dim": "8", "conv_alpha": "8.0"}),
        ("lokr", "lycoris.kohya", {"algo": "lokr", "conv_dim": "4", "conv_alpha": "4.0", "factor": "4"}),
        ("dora", "lycoris.kohya", {"algo": "lora", "dora_wd": "True", "wd_on_output": "True"}),
    ],
)
def test_metadata_names_the_network_as_kohya_and_lycoris_write_it(trained, name: str, module: str, args) -> None:
    import json

    result = trained(name, "sd15")[0]
    with safe_open(str(result.lora_kohya_path), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == module
    assert (json.loads(meta["ss_network_args"]) if "ss_network_args" in meta else None) == args
    assert meta["ss_network_dim"] == "4" and meta["ss_clip_skip"] == "1"
    assert (result.lora_diffusers_path is not None) == (name not in ("loha", "lokr"))
