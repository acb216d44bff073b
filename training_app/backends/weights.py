"""Checks a downloaded LoRA before it becomes an artifact: a readable safetensors file, and which key
layout it uses. Pure Python (no torch): remote workers need not have the training stack."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from training_app.backends.base import BackendError

MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}

# Key prefixes -> layout. ComfyUI's own trainer names modules as its model does ("diffusion_model.…").
LAYOUT_PREFIXES = (
    ("comfyui", ("diffusion_model.",)),
    ("kohya", ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_transformer_")),
    ("diffusers", ("unet.", "text_encoder.", "text_encoder_2.", "transformer.")),
)


def read_header(path: Path) -> dict:
    """The tensors' header of a safetensors file, after checking every tensor lies inside the file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise BackendError("The remote side returned a file too short to be a LoRA (not a safetensors file).")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise BackendError("The remote side returned a file that is not a readable safetensors LoRA.")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BackendError("The remote side returned a file that is not a readable safetensors LoRA.") from None
    if not isinstance(header, dict):
        raise BackendError("The remote side returned a file that is not a readable safetensors LoRA.")
    data_size = size - 8 - length
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        raise BackendError("The remote side returned a safetensors file with no tensors in it.")
    for name, info in tensors.items():
        try:
            start, end = info["data_offsets"]
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            expected = count * DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise BackendError(f"The LoRA file's entry {name!r} is malformed.") from None
        if not (0 <= start <= end <= data_size) or end - start != expected:
            raise BackendError(f"The LoRA file is truncated or corrupt (tensor {name!r}).")
    return header


def detect_layout(header: dict) -> str:
    """'comfyui', 'kohya' or 'diffusers' from the tensor names; BackendError when none fits."""
    keys = [k for k in header if k != "__metadata__"]
    for layout, prefixes in LAYOUT_PREFIXES:
        if all(k.startswith(prefixes) for k in keys):
            return layout
    sample = ", ".join(sorted(keys)[:3])
    raise BackendError(f"The LoRA file uses a key layout the portal does not know (keys like {sample}).")
