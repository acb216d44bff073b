"""File hashes other tools use to recognise models and LoRAs (standard library only, no torch).

* ``sha256_file``: the full sha256 of a file, streamed in 1 MiB chunks (A1111's "new" model hash,
  Civitai's file hash, kohya's ``ss_new_sd_model_hash``).
* ``short_hash``: A1111's old model hash, the first 8 hex digits of the sha256 of the 64 KiB at
  offset 1 MiB (fewer bytes when the file is shorter). kohya's ``ss_sd_model_hash`` and
  ``sshs_legacy_hash`` use the same rule.
* ``safetensors_data_sha256``: the sha256 of a ``.safetensors`` file's tensor bytes only, i.e. of
  everything after the 8-byte header length and the JSON header (kohya's ``sshs_model_hash``), so
  the hash does not change when only the metadata does.

The portal imports this module on web nodes (``add_base_model``), so it must stay torch-free.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20
SHORT_HASH_OFFSET = 0x100000
SHORT_HASH_LENGTH = 0x10000

# The UNet weights of a diffusers folder, in the order they are looked for: the main file of the
# model, and the one that changes when a fine-tune does (VAE and text encoders are often shared).
UNET_WEIGHT_FILES = (
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.fp16.bin",
)


class ModelHashError(ValueError):
    """No weights file to hash at the given location."""


def _sha256_stream(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """The sha256 hex digest of the whole file, read 1 MiB at a time."""
    with open(path, "rb") as f:
        return _sha256_stream(f)


def short_hash(path: str | Path) -> str:
    """A1111's old 8-digit model hash: sha256 of the 64 KiB at offset 1 MiB, first 8 hex digits."""
    with open(path, "rb") as f:
        f.seek(SHORT_HASH_OFFSET)
        return hashlib.sha256(f.read(SHORT_HASH_LENGTH)).hexdigest()[:8]


def safetensors_data_sha256(path: str | Path) -> str:
    """sha256 of the bytes after a ``.safetensors`` header (the tensor data only)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ModelHashError(f"{Path(path).name} is too short to be a .safetensors file")
        f.seek(8 + int.from_bytes(raw, "little"))
        return _sha256_stream(f)


def base_model_weights_file(location: str | Path) -> Path:
    """The file whose hashes name a base model: a single-file checkpoint itself, or the UNet
    weights of a diffusers folder (a folder has no single file; A1111 and Civitai only ever hash
    single files, and the UNet is what a fine-tune changes)."""
    path = Path(location)
    if path.is_file():
        return path
    if path.is_dir():
        for name in UNET_WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise ModelHashError(f"{path.name} has no UNet weights file ({UNET_WEIGHT_FILES[0]})")
    raise ModelHashError(f"{path} does not exist")


def base_model_sha256(location: str | Path) -> str:
    """Full sha256 of the base model's weights file (see :func:`base_model_weights_file`)."""
    return sha256_file(base_model_weights_file(location))


def base_model_short_hash(location: str | Path) -> str:
    """A1111's old hash of the base model's weights file."""
    return short_hash(base_model_weights_file(location))
