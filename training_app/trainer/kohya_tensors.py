"""One peft adapter layer as the tensors a kohya/LyCORIS file stores for it (suffix -> fp32 CPU tensor).

The suffixes and their meaning are the loaders' (ComfyUI's ``comfy/weight_adapter``, A1111's and Forge's
network modules, LyCORIS): the update a loader rebuilds must be the update peft applied in training.

* LoRA/LoCon: ``lora_down.weight`` (peft ``lora_A``), ``lora_up.weight`` (``lora_B``), ``alpha``; loaders scale
  by ``alpha / rank`` with rank = ``lora_down``'s first dimension, as peft's ``scaling`` does.
* LoHa: ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, ``alpha``: ``(w1a@w1b) * (w2a@w2b) * alpha/rank``
  reshaped to the weight (convolutions flattened to ``(out, in*k*k)``, peft's layout without
  ``use_effective_conv2d``).
* LoKr: ``lokr_w1`` or ``lokr_w1_a``/``lokr_w1_b``, ``lokr_w2`` or ``lokr_w2_a``/``lokr_w2_b``, ``alpha``:
  ``kron(w1, w2)``. Loaders apply ``alpha / rank`` only when a factor is decomposed (rank = its ``_b``'s first
  dimension) and 1 otherwise, while peft always scales by ``alpha / r``: with both factors full, that scale is
  baked into ``lokr_w2``.
* DoRA: ``dora_scale`` of shape ``(out, 1, ...)``. peft computes ``W' = m * (W + dW) / |W + dW|`` (row norms).
  ComfyUI and Forge, seeing a per-output ``dora_scale``, compute ``W + dW`` times ``dora_scale / (|W| + eps)``,
  the norm of the *base* weight; so we store ``m * (|W| + eps) / |W + dW|`` and their result is peft's.
  LyCORIS' own rule (divide by ``|W + dW|``) would need ``m`` itself; A1111 knows only per-input DoRA.
"""

from __future__ import annotations

from typing import Any

from .lora import ADAPTER_NAME


def _cpu(tensor: Any) -> Any:
    return tensor.detach().to("cpu").float().contiguous().clone()


def _alpha(layer: Any) -> Any:
    import torch

    # peft keeps alpha/r as `scaling`; rank patterns make r per layer, so rebuild alpha from both.
    return torch.tensor(float(layer.scaling[ADAPTER_NAME]) * layer.r[ADAPTER_NAME], dtype=torch.float32)


def _lora(layer: Any) -> dict[str, Any]:
    a = ADAPTER_NAME
    out = {"lora_down.weight": _cpu(layer.lora_A[a].weight), "lora_up.weight": _cpu(layer.lora_B[a].weight),
           "alpha": _alpha(layer)}
    if layer.use_dora.get(a, False):
        out["dora_scale"] = _comfy_dora_scale(layer, out["lora_up.weight"], out["lora_down.weight"])
    return out


def _comfy_dora_scale(layer: Any, up: Any, down: Any) -> Any:
    import torch

    a = ADAPTER_NAME
    weight = _cpu(layer.get_base_layer().weight)
    delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape) * float(layer.scaling[a])
    rows = weight.shape[0]
    base_norm = weight.reshape(rows, -1).norm(dim=1) + torch.finfo(torch.float32).eps
    adapted_norm = (weight + delta).reshape(rows, -1).norm(dim=1)
    magnitude = _cpu(layer.lora_magnitude_vector[a].weight).reshape(rows)
    return (magnitude * base_norm / adapted_norm).reshape(rows, *[1] * (weight.dim() - 1))


def _loha(layer: Any) -> dict[str, Any]:
    a = ADAPTER_NAME
    if a in layer.hada_t1:
        raise ValueError("LoHa with use_effective_conv2d (Tucker) is not exported")
    return {name: _cpu(getattr(layer, name)[a]) for name in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")} | {
        "alpha": _alpha(layer)}


def _lokr(layer: Any) -> dict[str, Any]:
    a = ADAPTER_NAME
    if a in layer.lokr_t2:
        raise ValueError("LoKr with use_effective_conv2d (Tucker) is not exported")
    out = {name: _cpu(getattr(layer, name)[a]) for name in
           ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b") if a in getattr(layer, name)}
    if "lokr_w1" in out and "lokr_w2" in out:
        out["lokr_w2"] = out["lokr_w2"] * float(layer.scaling[a])
    out["alpha"] = _alpha(layer)
    return out


def layer_tensors(layer: Any) -> dict[str, Any]:
    """The kohya/LyCORIS tensors of one peft tuner layer (LoRA, LoHa or LoKr)."""
    if hasattr(layer, "lora_A"):
        return _lora(layer)
    if hasattr(layer, "hada_w1_a"):
        return _loha(layer)
    if hasattr(layer, "lokr_w1"):
        return _lokr(layer)
    raise ValueError(f"cannot export adapter layer {type(layer).__name__}")
