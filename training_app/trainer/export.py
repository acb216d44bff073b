"""Writing the trained LoRA as ``.safetensors`` in the two layouts people use.

* diffusers/peft layout: exactly what ``StableDiffusionPipeline.save_lora_weights``
  (``StableDiffusionXLPipeline`` for SDXL) writes, including the
  ``lora_adapter_metadata`` header that lets diffusers restore ``alpha``.
  Load with ``pipe.load_lora_weights(path)``.
* kohya/A1111 layout: ``lora_unet_<module>.lora_down.weight``,
  ``.lora_up.weight`` and ``.alpha`` per module (``lora_te_`` for the SD 1.5
  text encoder, ``lora_te1_``/``lora_te2_`` for SDXL's), which ComfyUI,
  Forge/A1111 and diffusers all load. SD 1.5 UNet modules keep their diffusers
  names (as kohya's sd-scripts write them); SDXL UNet modules use the original
  "sgm" names (``input_blocks.4.1...``) like sd-scripts' SDXL LoRAs.

Both files carry the header of ``lora_header.py`` (kohya ``ss_*``/``sshs_*``, ModelSpec, ``lorasite_*``).
Weights are stored in fp32 so a reload reproduces the trained model exactly.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .lora_header import legacy_hash_metadata, with_file_hashes
from .model_hash import safetensors_data_sha256, short_hash

KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
SDXL_TE_PREFIX = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
_RESNET_SGM = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
    "norm1": "in_layers.0",
    "norm2": "out_layers.0",
}


class ExportError(RuntimeError):
    """The LoRA cannot be written in the requested layout."""


def _sgm_resnet_rest(rest: str) -> str:
    head, _, tail = rest.partition(".")
    if head not in _RESNET_SGM:
        raise ExportError(f"no SDXL kohya name for resnet module {rest!r}")
    return _RESNET_SGM[head] + ("." + tail if tail else "")


def sdxl_unet_module_to_sgm(path: str, layers_per_block: int, up_attention: Sequence[bool] = ()) -> str:
    """Map a diffusers SDXL UNet module path to the original (sgm) naming kohya uses.

    ``down_blocks.b.attentions.l`` -> ``input_blocks.(1 + b*(L+1) + l).1``,
    ``mid_block.attentions.0`` -> ``middle_block.1``,
    ``up_blocks.b.attentions.l`` -> ``output_blocks.(b*(L+1) + l).1`` with
    L = layers_per_block (up blocks have L+1 layers). Resnets map to slot 0
    with their inner layers renamed; a down block's downsampler is the ``op``
    of the next input block, an up block's upsampler follows its last layer
    (slot 2 when that block has attentions, else 1: ``up_attention[b]``).
    This is the inverse of diffusers' ``_maybe_map_sgm_blocks_to_diffusers``.
    """
    lpb = layers_per_block
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv$", path):
        return f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv$", path):
        b = int(m[1])
        slot = 2 if (up_attention[b] if b < len(up_attention) else True) else 1
        return f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv"
    if m := re.match(r"down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)$", path):
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = 1 + b * (lpb + 1) + i
        return (
            f"input_blocks.{idx}.1.{rest}"
            if kind == "attentions"
            else f"input_blocks.{idx}.0.{_sgm_resnet_rest(rest)}"
        )
    if m := re.match(r"mid_block\.(attentions|resnets)\.(\d+)\.(.+)$", path):
        kind, i, rest = m[1], int(m[2]), m[3]
        if kind == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{0 if i == 0 else 2}.{_sgm_resnet_rest(rest)}"
    if m := re.match(r"up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)$", path):
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        idx = b * (lpb + 1) + i
        return (
            f"output_blocks.{idx}.1.{rest}"
            if kind == "attentions"
            else f"output_blocks.{idx}.0.{_sgm_resnet_rest(rest)}"
        )
    raise ExportError(f"no SDXL kohya name for UNet module {path!r}")


def unet_layout(unet_config: Mapping[str, Any]) -> tuple[int, tuple[bool, ...]]:
    """``(layers_per_block, up blocks with attentions)`` from a diffusers UNet config: what sgm names need."""
    lpb = unet_config.get("layers_per_block", 2)
    if not isinstance(lpb, int):  # per-block tuples: kohya naming assumes one value
        lpb = int(lpb[0])
    up_attention = tuple("CrossAttn" in kind for kind in unet_config.get("up_block_types", ()))
    return lpb, up_attention


def kohya_module_name(
    component: str, module_path: str, family: str, layers_per_block: int = 2, up_attention: Sequence[bool] = ()
) -> str:
    """kohya LoRA module name, e.g. ``lora_unet_down_blocks_0_attentions_0_..._to_q``."""
    if family == "sdxl":
        if component == "unet":
            sgm = sdxl_unet_module_to_sgm(module_path, layers_per_block, up_attention)
            return "lora_unet_" + sgm.replace(".", "_")
        return SDXL_TE_PREFIX[component] + module_path.replace(".", "_")
    return KOHYA_PREFIX[component] + module_path.replace(".", "_")


def canonical_text_encoder_keys(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Spell CLIP module paths as ``text_model.encoder...`` whatever the transformers version.

    transformers 5 dropped the ``text_model`` wrapper from ``CLIPTextModel``
    (``CLIPTextModelWithProjection`` kept it), but every LoRA consumer
    (A1111/Forge, ComfyUI, diffusers on transformers 4) expects the original
    names, so files always use them.
    """
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in sd.items()}


def canonical_state_dicts(peft_sds: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c: dict(sd) if c == "unet" else canonical_text_encoder_keys(sd) for c, sd in peft_sds.items()}


def kohya_state_dict(
    comps: Mapping[str, Any], family: str, unet_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The kohya/LyCORIS state dict of the adapters attached to ``comps`` (live modules by component).

    Each adapted layer becomes ``<kohya name>.<LyCORIS suffix>`` (see ``kohya_tensors.py``).
    """
    from .kohya_tensors import layer_tensors
    from .lora import adapter_layers

    lpb, up_attention = unet_layout(unet_config or {})
    out: dict[str, Any] = {}
    for component, module in comps.items():
        for path, layer in adapter_layers(module):
            if component != "unet" and not path.startswith("text_model."):
                path = f"text_model.{path}"  # see canonical_text_encoder_keys
            name = kohya_module_name(component, path, family, lpb, up_attention)
            tensors = layer_tensors(layer)
            if any(f"{name}.{suffix}" in out for suffix in tensors):
                raise ExportError(f"two modules map to the same kohya name {name}")
            out.update({f"{name}.{suffix}": tensor for suffix, tensor in tensors.items()})
    return out


def _atomic_save(tensors: dict[str, Any], path: Path, metadata: dict[str, str]) -> Path:
    """Write ``tensors`` with ``metadata`` plus the file's own hashes (``sshs_*``), then move it into place.

    The temporary file is written twice: first with the ``ss_*`` keys only, the file sd-scripts'
    legacy hash is defined over; its tensor bytes are the final ones (safetensors lays tensors out
    by dtype and name, whatever the header), so the data hash taken from it holds for the final file.
    """
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=legacy_hash_metadata(metadata))
        metadata = with_file_hashes(metadata, safetensors_data_sha256(tmp), short_hash(tmp))
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_kohya_lora(
    path: Path,
    comps: Mapping[str, Any],
    family: str,
    metadata: Mapping[str, str],
    unet_config: Mapping[str, Any] | None = None,
) -> Path:
    """Write the kohya/LyCORIS layout file (atomically) and return its path."""
    sd = kohya_state_dict(comps, family, unet_config)
    return _atomic_save(sd, Path(path), dict(metadata))


def save_diffusers_lora(
    path: Path,
    peft_sds: Mapping[str, Mapping[str, Any]],
    peft_configs: Mapping[str, Any],
    family: str,
    metadata: Mapping[str, str],
) -> Path:
    """Write the diffusers layout via the pipeline's own ``save_lora_weights``, adding our header keys."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors import safe_open

    pipe_cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    kwargs: dict[str, Any] = {}
    for component, sd in canonical_state_dicts(peft_sds).items():
        # peft's own key names, as diffusers' loader reads them: convert_state_dict_to_diffusers renames only
        # the attention projections and would leave a file of mixed spellings that the loader half ignores.
        kwargs[f"{component}_lora_layers"] = sd
        # Without this diffusers would assume alpha == rank on load.
        kwargs[f"{component}_lora_adapter_metadata"] = peft_configs[component].to_dict()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
        pipe_cls.save_lora_weights(tmp, safe_serialization=True, **kwargs)
        written = Path(tmp) / "pytorch_lora_weights.safetensors"
        with safe_open(str(written), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _atomic_save(tensors, Path(path), {**header, **dict(metadata)})


# -- LoRAs trained elsewhere ---------------------------------------------------------------------
# ComfyUI's own trainer names every module as its (ldm) model does: "diffusion_model.input_blocks.1.1.
# transformer_blocks.0.attn1.to_q.lora_up.weight", with ".alpha" per module and, besides the low-rank
# pairs, ".diff"/".diff_b" deltas for norms and biases that no LoRA loader outside ComfyUI applies.
COMFYUI_PREFIX = "diffusion_model."
# Modules whose LoRA pair is a Linear in every SD-family UNet (the kohya and diffusers files hold these).
_LINEAR_ATTENTION = re.compile(r"\.transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2))$")


def ldm_unet_module_to_diffusers(path: str, layers_per_block: int) -> str:
    """Inverse of ``sdxl_unet_module_to_sgm`` for attention modules (SD 1.5 and SDXL alike)."""
    lpb = layers_per_block
    if m := re.match(r"input_blocks\.(\d+)\.1\.(.+)$", path):
        b, i = divmod(int(m[1]) - 1, lpb + 1)
        return f"down_blocks.{b}.attentions.{i}.{m[2]}"
    if m := re.match(r"middle_block\.1\.(.+)$", path):
        return f"mid_block.attentions.0.{m[1]}"
    if m := re.match(r"output_blocks\.(\d+)\.1\.(.+)$", path):
        b, i = divmod(int(m[1]), lpb + 1)
        return f"up_blocks.{b}.attentions.{i}.{m[2]}"
    raise ExportError(f"no diffusers name for UNet module {path!r}")


def comfyui_lora_to_peft(tensors: Mapping[str, Any], layers_per_block: int) -> tuple[dict[str, Any], int, list[str]]:
    """The linear attention pairs of a ComfyUI-trained LoRA as a peft UNet state dict, with each
    module's alpha/rank baked into lora_B (so alpha == rank on load); returns (state dict, rank, dropped keys)."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    ranks: set[int] = set()
    for key in sorted(tensors):
        if not key.startswith(COMFYUI_PREFIX):
            dropped.append(key)
            continue
        if not key.endswith(".lora_up.weight"):
            if not key.endswith((".lora_down.weight", ".alpha")):
                dropped.append(key)
            continue
        module = key[len(COMFYUI_PREFIX): -len(".lora_up.weight")]
        down, up = tensors.get(f"{COMFYUI_PREFIX}{module}.lora_down.weight"), tensors[key]
        if down is None or not _LINEAR_ATTENTION.search(module) or down.dim() != 2 or up.dim() != 2:
            dropped.append(key)
            continue
        rank = int(down.shape[0])
        alpha = tensors.get(f"{COMFYUI_PREFIX}{module}.alpha")
        scale = float(alpha) / rank if alpha is not None else 1.0
        name = ldm_unet_module_to_diffusers(module, layers_per_block)
        out[f"{name}.lora_A.weight"] = down.float().contiguous()
        out[f"{name}.lora_B.weight"] = (up.float() * scale).contiguous()
        ranks.add(rank)
    if not out:
        raise ExportError("the file holds no LoRA pair of an attention layer")
    if len(ranks) != 1:
        raise ExportError(f"the file mixes LoRA ranks {sorted(ranks)}")
    return out, ranks.pop(), dropped


def kohya_state_dict_from_peft(unet_sd: Mapping[str, Any], family: str, layers_per_block: int) -> dict[str, Any]:
    """kohya keys for a UNet LoRA given as peft tensors (`<module>.lora_A/B.weight`, scale already in B,
    so alpha == rank)."""
    import torch

    out: dict[str, Any] = {}
    for key, tensor in unet_sd.items():
        module, which, _ = key.rsplit(".", 2)
        name = kohya_module_name("unet", module, family, layers_per_block)
        out[f"{name}.{'lora_down' if which == 'lora_A' else 'lora_up'}.weight"] = tensor.contiguous()
        if which == "lora_A":
            out[f"{name}.alpha"] = torch.tensor(float(tensor.shape[0]))
    return out


def save_layouts_from_comfyui(source: Path, family: str, out_dir: Path, stem: str, layers_per_block: int,
                              metadata: Mapping[str, str]) -> tuple[Path, Path, list[str]]:
    """Write the kohya and diffusers files for a ComfyUI-trained SD 1.5/SDXL LoRA; returns both paths
    and the keys that could not be carried over."""
    from peft import LoraConfig
    from safetensors.torch import load_file

    unet_sd, rank, dropped = comfyui_lora_to_peft(load_file(str(source)), layers_per_block)
    targets = sorted({k.rsplit(".", 2)[0] for k in unet_sd})  # exact module paths
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    meta = {"ss_network_dim": str(rank), "ss_network_alpha": str(rank), **dict(metadata)}
    kohya = _atomic_save(kohya_state_dict_from_peft(unet_sd, family, layers_per_block),
                         out_dir / f"{stem}.safetensors", meta)
    diffusers = save_diffusers_lora(out_dir / f"{stem}.diffusers.safetensors", {"unet": unet_sd}, {"unet": config},
                                    family, meta)
    return kohya, diffusers, dropped
