"""Convert a diffusers SD 1.5 folder into an original-LDM-layout single ``.safetensors``.

Used by tests (and demos) to exercise ``from_single_file`` loading offline: the
tiny model is written in the layout CompVis/A1111 checkpoints use
(``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.text_model.*``). The mapping is the inverse of
diffusers' ``convert_ldm_unet_checkpoint`` / ``convert_ldm_vae_checkpoint`` and
is generic in the number of blocks and ``layers_per_block``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_VAE_FIXED = {"conv_norm_out": "norm_out"}
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _resnet(rest: str) -> str:
    for new, old in _UNET_RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_key_to_ldm(key: str, lpb: int, up_attn_blocks: set[int]) -> str:
    """diffusers UNet parameter name -> LDM name (without the ``model.diffusion_model.`` prefix)."""
    for new, old in _UNET_FIXED.items():
        if key.startswith(new + "."):
            return old + key[len(new) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", key):
        i = 1 + int(m[1]) * (lpb + 1) + int(m[3])
        return f"input_blocks.{i}.0.{_resnet(m[4])}" if m[2] == "resnets" else f"input_blocks.{i}.1.{m[4]}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", key):
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key):
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{2 * int(m[2])}.{_resnet(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", key):
        i = int(m[1]) * (lpb + 1) + int(m[3])
        return f"output_blocks.{i}.0.{_resnet(m[4])}" if m[2] == "resnets" else f"output_blocks.{i}.1.{m[4]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", key):
        b = int(m[1])
        slot = 2 if b in up_attn_blocks else 1
        return f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv.{m[2]}"
    raise ValueError(f"no LDM name for UNet key {key}")


def vae_key_to_ldm(key: str, n_up: int) -> str:
    """diffusers VAE parameter name -> LDM name (without the ``first_stage_model.`` prefix)."""
    part, _, rest = key.partition(".")
    for new, old in _VAE_FIXED.items():
        if rest.startswith(new + "."):
            return f"{part}.{old}{rest[len(new) :]}"
    rest = rest.replace("conv_shortcut", "nin_shortcut")
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", rest):
        return f"{part}.down.{m[1]}.block.{m[2]}.{m[3]}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", rest):
        return f"{part}.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", rest):
        return f"{part}.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", rest):
        return f"{part}.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)$", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2]}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)$", rest):
        inner = m[1]
        for new, old in _VAE_ATTN:
            if inner.startswith(new + "."):
                return f"{part}.mid.attn_1.{old}{inner[len(new) :]}"
    return key  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def write_single_file_checkpoint(diffusers_dir: str | Path, out_path: str | Path) -> Path:
    """Write an SD 1.5 diffusers folder as one LDM-layout ``.safetensors`` (fp32) and return its path."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    src = Path(diffusers_dir)
    index = json.loads((src / "model_index.json").read_text())
    if "XL" in index.get("_class_name", ""):
        raise ValueError("only SD 1.5 folders can be converted")
    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(src, subfolder="vae")
    te = CLIPTextModel.from_pretrained(src, subfolder="text_encoder")
    lpb = unet.config.layers_per_block
    up_attn = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    out: dict[str, Any] = {}
    for k, v in unet.state_dict().items():
        out["model.diffusion_model." + unet_key_to_ldm(k, lpb, up_attn)] = v
    n_up = len(vae.config.up_block_types)
    for k, v in vae.state_dict().items():
        name = vae_key_to_ldm(k, n_up)
        if ".mid.attn_1." in name and name.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM VAE attention uses 1x1 convolutions
        out["first_stage_model." + name] = v
    for k, v in te.state_dict().items():
        key = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + key] = v
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(out_path))
    return out_path
