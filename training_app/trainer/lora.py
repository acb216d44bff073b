"""Attaching LoRA adapters (peft) to the UNet and optionally the text encoder(s).

Only the adapter weights are trainable; the base weights are frozen. The
UNet's attention projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) are
the default targets, as in diffusers' ``train_text_to_image_lora.py`` and
kohya's default LoRA; CLIP text encoders get the equivalent ``q_proj``,
``k_proj``, ``v_proj`` and ``out_proj``.
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig

TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
ADAPTER_NAME = "default"


def lora_config(cfg: TrainConfig, target_modules: tuple[str, ...]) -> Any:
    """peft ``LoraConfig`` for our rank/alpha/dropout on the given module names."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.effective_alpha,
        lora_dropout=cfg.dropout,
        # "gaussian" starts lora_B at zero, so step 0 equals the base model exactly.
        init_lora_weights="gaussian",
        target_modules=list(target_modules),
    )


def _check_targets(model: Any, targets: tuple[str, ...], what: str) -> None:
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        from .config import TrainerConfigError

        raise TrainerConfigError(f"target_modules not found in the {what}: {', '.join(missing)}")


def attach_lora(unet: Any, text_encoders: list[Any], cfg: TrainConfig) -> dict[str, Any]:
    """Freeze the base models and add LoRA adapters; returns the peft configs by component.

    Component names are "unet", "text_encoder" and (SDXL) "text_encoder_2",
    the same names diffusers' ``save_lora_weights`` uses.
    """
    unet.requires_grad_(False)
    for enc in text_encoders:
        enc.requires_grad_(False)
    _check_targets(unet, cfg.target_modules, "UNet")
    configs = {"unet": lora_config(cfg, cfg.target_modules)}
    unet.add_adapter(configs["unet"])
    if cfg.train_text_encoder:
        from peft import inject_adapter_in_model

        for i, enc in enumerate(text_encoders):
            name = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
            configs[name] = lora_config(cfg, TEXT_ENCODER_TARGETS)
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
    """LoRA weights of one component in peft naming (``...to_q.lora_A.weight``), on CPU in fp32.

    Same result as ``peft.get_peft_model_state_dict`` for plain LoRA, but also
    works for modules injected without a ``peft_config`` attribute.
    """
    tag = f".{ADAPTER_NAME}."
    out = {}
    for name, p in module.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
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
