"""The adapter networks the trainer offers (LoRA, LoCon, LoHa, LoKr, optionally DoRA) and which layers they train.

Pure data and rules, no torch: the portal imports this to validate a config, describe a job's files and
estimate sizes. The names follow kohya/LyCORIS (``network_module``, ``algo``, ``conv_dim``, ``factor``,
``dora_wd``) so a kohya user recognises them; the maths comes from peft (see ``lora.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

NETWORKS = ("lora", "locon", "loha", "lokr")
TARGET_LAYERS = ("attention", "attention_mlp", "all_linear", "all_linear_conv")

# UNet module-name suffixes (diffusers names) per target preset; each preset adds to the one before.
UNET_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
UNET_MLP = ("ff.net.0.proj", "ff.net.2")
# proj_in/proj_out are 1x1 convolutions in SD 1.5 and linear layers in SDXL; like kohya, both count as
# linear layers (they take the main rank). time_emb_proj is the linear layer inside each ResNet block.
UNET_OTHER_LINEAR = ("proj_in", "proj_out", "time_emb_proj")
# The ResNet convolutions LoCon trains: 3x3 ones take conv_rank/conv_alpha, the 1x1 shortcut the main rank.
UNET_CONVOLUTIONS = ("conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")
TEXT_ENCODER_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
TEXT_ENCODER_MLP = ("fc1", "fc2")

# Which files each network can be written as (reporter layout names).
LAYOUTS = {"lora": ("kohya", "diffusers"), "locon": ("kohya", "diffusers"), "loha": ("kohya",), "lokr": ("kohya",)}

# What loads each network's file, checked against the loaders' code (docs/trainer.md has the detail).
LOADERS = {
    "lora": {"A1111/Forge": "yes", "ComfyUI": "yes", "diffusers": "yes (both files)"},
    "locon": {"A1111/Forge": "yes", "ComfyUI": "yes", "diffusers": "yes (both files)"},
    "loha": {"A1111/Forge": "yes", "ComfyUI": "yes", "diffusers": "no (diffusers has no LoHa loader for SD/SDXL)"},
    "lokr": {"A1111/Forge": "yes", "ComfyUI": "yes", "diffusers": "no (its LoKr loader covers Flux 2/Z-Image only)"},
}
DORA_LOADERS = {"A1111/Forge": "Forge yes; A1111 no (it only knows per-input DoRA)", "ComfyUI": "yes",
                "diffusers": "yes (diffusers file only: it drops dora_scale from kohya files)"}


def trains_convolutions(network: str, target_layers: str) -> bool:
    """LoCon always trains the ResNet convolutions; LoHa/LoKr do with the ``all_linear_conv`` preset."""
    return network == "locon" or target_layers == "all_linear_conv"


def unet_targets(target_layers: str, network: str, custom: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The UNet module-name suffixes that get adapters (``custom`` replaces the linear presets)."""
    if custom is not None:
        linear = custom
    else:
        linear = UNET_ATTENTION
        if target_layers != "attention":
            linear += UNET_MLP
        if target_layers in ("all_linear", "all_linear_conv"):
            linear += UNET_OTHER_LINEAR
    convs = UNET_CONVOLUTIONS if trains_convolutions(network, target_layers) else ()
    return tuple(dict.fromkeys(linear + convs))


def text_encoder_targets(target_layers: str) -> tuple[str, ...]:
    """CLIP has no convolutions, and its MLP is its only other linear layer: three presets mean the same there."""
    return TEXT_ENCODER_ATTENTION if target_layers == "attention" else TEXT_ENCODER_ATTENTION + TEXT_ENCODER_MLP


def network_problems(values: Mapping[str, Any], default_target_modules: tuple[str, ...]) -> list[tuple[str, str]]:
    """Cross-field rules as ``(key, message)``; each key's own range is checked by its FieldSpec."""
    network, target_layers = values.get("network", "lora"), values.get("target_layers", "attention")
    problems = []
    if values.get("dora") and network not in ("lora", "locon"):
        problems.append(("dora", f"dora works with network lora or locon, not {network} "
                                 "(LyCORIS' DoRA on LoHa/LoKr has no peft counterpart)"))
    if network == "lora" and target_layers == "all_linear_conv":
        problems.append(("target_layers", "training the convolutions with LoRA is LoCon: choose network locon"))
    if network == "lokr" and values.get("factor", -1) == 0:
        problems.append(("factor", "factor must be -1 (as balanced as possible) or a positive number"))
    custom = tuple(values.get("target_modules", default_target_modules))
    if custom != tuple(default_target_modules) and target_layers != "attention":
        problems.append(("target_modules", "set either target_layers or target_modules (explicit module names), "
                                           "not both"))
    return problems


def kohya_network_metadata(cfg: Any) -> dict[str, str]:
    """``ss_network_module`` and ``ss_network_args`` as kohya's sd-scripts/LyCORIS write them.

    Plain LoRA is kohya's own ``networks.lora`` (no args); everything else is ``lycoris.kohya`` with its
    ``--network_args`` as a JSON object of strings, e.g. ``{"algo": "locon", "conv_dim": "8", ...}``.
    """
    if cfg.network == "lora" and not cfg.dora:
        return {"ss_network_module": "networks.lora"}
    args = {"algo": cfg.network}
    if trains_convolutions(cfg.network, cfg.target_layers):
        args["conv_dim"] = str(cfg.effective_conv_rank)
        args["conv_alpha"] = str(cfg.effective_conv_alpha)
    if cfg.network == "lokr":
        args["factor"] = str(cfg.factor)
    if cfg.dora:
        # Our dora_scale is per output channel (peft's rule); LyCORIS calls that wd_on_output.
        args["dora_wd"] = "True"
        args["wd_on_output"] = "True"
    if cfg.dropout:
        # LoHa/LoKr take our dropout as LyCORIS' rank dropout (see lora.py).
        args["rank_dropout" if cfg.network in ("loha", "lokr") else "dropout"] = str(cfg.dropout)
    return {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(args)}


def describe(network: str, dora: bool) -> str:
    """A short name people know: ``LoCon + DoRA``."""
    name = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr"}[network]
    return f"{name} + DoRA" if dora else name


def layouts_for(network: str) -> tuple[str, ...]:
    return LAYOUTS[network]


def loaders_for(network: str, dora: bool) -> dict[str, str]:
    return dict(DORA_LOADERS) if dora else dict(LOADERS[network])
