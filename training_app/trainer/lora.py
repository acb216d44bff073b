"""Attaching adapters (peft's LoRA, LoHa or LoKr, optionally DoRA) to the UNet and optionally the text encoder(s).

Only the adapter weights are trainable; the base weights are frozen. Which layers get adapters comes from
``networks.py`` (attention only by default, as diffusers' ``train_text_to_image_lora.py`` and kohya's
minimum; up to every linear layer plus the ResNet convolutions). The maths is peft's own: ``LoraConfig``
(``use_dora`` for DoRA), ``LoHaConfig`` and ``LoKrConfig``; the 3x3 convolutions get their own rank and
alpha through peft's ``rank_pattern``/``alpha_pattern``.
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig, TrainerConfigError
from .networks import text_encoder_targets, unet_targets

ADAPTER_NAME = "default"
# Trainable tensors of every supported adapter type, by their peft attribute names.
ADAPTER_PARAMS = ("lora_A", "lora_B", "lora_magnitude_vector", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b",
                  "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


def _conv_patterns(model: Any, targets: tuple[str, ...], cfg: TrainConfig) -> tuple[dict, dict]:
    """peft rank/alpha patterns giving every targeted convolution wider than 1x1 the conv rank and alpha."""
    import torch

    if cfg.effective_conv_rank == cfg.rank and cfg.effective_conv_alpha == cfg.effective_alpha:
        return {}, {}
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Conv2d) and module.kernel_size != (1, 1)
             and any(name == t or name.endswith("." + t) for t in targets)]
    # peft matches pattern keys as regular expressions anchored at a module-name boundary.
    return ({name: cfg.effective_conv_rank for name in names}, {name: cfg.effective_conv_alpha for name in names})


def adapter_config(cfg: TrainConfig, target_modules: tuple[str, ...], model: Any = None) -> Any:
    """The peft config of ``cfg.network`` on the given module names (``model`` supplies conv layer names)."""
    ranks, alphas = _conv_patterns(model, target_modules, cfg) if model is not None else ({}, {})
    common = {"r": cfg.rank, "target_modules": list(target_modules), "rank_pattern": ranks, "alpha_pattern": alphas}
    if cfg.network in ("lora", "locon"):
        from peft import LoraConfig

        # "gaussian" starts lora_B at zero, so step 0 equals the base model exactly.
        return LoraConfig(lora_alpha=cfg.effective_alpha, lora_dropout=cfg.dropout, init_lora_weights="gaussian",
                          use_dora=cfg.dora, **common)
    if cfg.network == "loha":
        from peft import LoHaConfig

        # LyCORIS' LoHa has no input dropout; our dropout becomes its rank dropout. init_weights zeroes
        # one factor, so step 0 equals the base model.
        return LoHaConfig(alpha=cfg.effective_alpha, rank_dropout=cfg.dropout, init_weights=True, **common)
    from peft import LoKrConfig

    return LoKrConfig(alpha=cfg.effective_alpha, rank_dropout=cfg.dropout, init_weights=True,
                      decompose_factor=cfg.factor, **common)


def _check_targets(model: Any, targets: tuple[str, ...], what: str, required: tuple[str, ...]) -> None:
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if t in required and not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise TrainerConfigError(f"target_modules not found in the {what}: {', '.join(missing)}")


def attach_lora(unet: Any, text_encoders: list[Any], cfg: TrainConfig) -> dict[str, Any]:
    """Freeze the base models and add the adapters; returns the peft configs by component.

    Component names are "unet", "text_encoder" and (SDXL) "text_encoder_2",
    the same names diffusers' ``save_lora_weights`` uses.
    """
    unet.requires_grad_(False)
    for enc in text_encoders:
        enc.requires_grad_(False)
    targets = unet_targets(cfg.target_layers, cfg.network, cfg.custom_target_modules)
    # Explicit names must all exist; a preset may name layers a model lacks (SD 1.5 has no linear proj_in).
    _check_targets(unet, targets, "UNet", cfg.custom_target_modules or ())
    configs = {"unet": adapter_config(cfg, targets, unet)}
    unet.add_adapter(configs["unet"])
    if cfg.train_text_encoder:
        from peft import inject_adapter_in_model

        for i, enc in enumerate(text_encoders):
            name = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
            configs[name] = adapter_config(cfg, text_encoder_targets(cfg.target_layers))
            # Not enc.add_adapter(): transformers 5 refuses peft < 0.22 there; the injection is the same.
            inject_adapter_in_model(configs[name], enc, adapter_name=ADAPTER_NAME)
    return configs


def components(unet: Any, text_encoders: list[Any], cfg: TrainConfig) -> dict[str, Any]:
    """The modules that carry trainable LoRA weights, by diffusers component name."""
    out = {"unet": unet}
    if cfg.train_text_encoder:
        for i, enc in enumerate(text_encoders):
            out["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = enc
    return out


def trainable_parameters(module: Any) -> list[Any]:
    return [p for p in module.parameters() if p.requires_grad]


def peft_state_dict(module: Any) -> dict[str, Any]:
    """LoRA (and DoRA magnitude) weights of one component in peft naming (``...to_q.lora_A.weight``), CPU fp32.

    Same result as ``peft.get_peft_model_state_dict`` for plain LoRA, but also
    works for modules injected without a ``peft_config`` attribute.
    """
    tag = f".{ADAPTER_NAME}."
    out = {}
    for name, p in module.named_parameters():
        if ".lora_A." in name or ".lora_B." in name or ".lora_magnitude_vector." in name:
            out[name.replace(tag, ".")] = p.detach().to("cpu").float().contiguous()
    return out


def trainable_state_dict(comps: dict[str, Any]) -> dict[str, Any]:
    """All trainable tensors keyed ``component/param_name`` (what checkpoints store)."""
    out = {}
    for cname, module in comps.items():
        for pname, p in module.named_parameters():
            if p.requires_grad:
                out[f"{cname}/{pname}"] = p.detach().to("cpu").contiguous().clone()
    return out


def load_trainable_state_dict(comps: dict[str, Any], state: dict[str, Any]) -> None:
    """Copy checkpointed trainable tensors back in place (keeps optimizer param identity)."""
    import torch

    expected = set()
    with torch.no_grad():
        for cname, module in comps.items():
            for pname, p in module.named_parameters():
                if not p.requires_grad:
                    continue
                key = f"{cname}/{pname}"
                expected.add(key)
                if key not in state:
                    raise KeyError(f"checkpoint lacks {key}")
                p.copy_(state[key].to(device=p.device, dtype=p.dtype))
    extra = set(state) - expected
    if extra:
        raise KeyError(f"checkpoint has unexpected tensors, e.g. {sorted(extra)[0]}")


def adapter_layers(module: Any) -> list[tuple[str, Any]]:
    """``(module path, peft tuner layer)`` for every adapted layer of a component, in module order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, BaseTunerLayer)]
