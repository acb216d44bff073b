"""Loading base models (SD 1.5 / SDXL) offline, with errors a person can act on.

A base model is either a diffusers folder (``model_index.json`` + component
subfolders) or a single ``.safetensors``/``.ckpt`` file in the original LDM
layout. Single files are loaded with ``from_single_file(path, config=DIR)``
where ``DIR`` is a local diffusers folder of the same family providing the
configs and tokenizers, so nothing is fetched from the Hub.

Also holds prompt encoding, because which hidden states feed the UNet is a
property of the model family.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import FAMILIES, ModelSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PIPELINE_CLASSES = {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}


class ModelLoadError(RuntimeError):
    """The base model could not be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    """The components of a base model that training needs."""

    family: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    source: Path

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"


def _pipeline_class(family: str) -> Any:
    import diffusers

    return getattr(diffusers, PIPELINE_CLASSES[family])


def _family_of_folder(path: Path) -> str | None:
    """Which family a diffusers folder holds, from ``model_index.json``'s class name."""
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} has an unreadable model_index.json: {exc}") from exc
    name = str(index.get("_class_name", ""))
    if "XL" in name:
        return "sdxl"
    if name.startswith("StableDiffusion"):
        return "sd15"
    return None


def _family_of_single_file(path: Path) -> str | None:
    """Guess the family of an LDM-layout checkpoint from its tensor names (safetensors only)."""
    if path.suffix.lower() != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelLoadError(
            f"{path.name} is not a valid .safetensors file (it may be truncated or corrupt): {exc}"
        ) from exc
    if not keys:
        raise ModelLoadError(f"{path.name} contains no tensors")
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("cond_stage_model.") for k in keys):
        return "sd15"
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelLoadError(
            f"{path.name} does not look like a Stable Diffusion checkpoint (no model.diffusion_model.* weights);"
            " is it a LoRA or an embedding rather than a base model?"
        )
    return None


def detect_family(path: Path) -> str | None:
    """The family (sd15, sdxl) a diffusers folder or single checkpoint holds, read from its index or
    tensor names without loading weights; None where a .ckpt cannot tell. Raises ModelLoadError
    for what is not a base model at all."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{path} is not a diffusers model folder (model_index.json is missing)")
        found = _family_of_folder(path)
        if found is None:
            raise ModelLoadError(f"{path} holds a pipeline that is neither SD 1.5 nor SDXL")
        return found
    if path.suffix.lower() not in (".safetensors", ".ckpt"):
        raise ModelLoadError(f"{path.name}: a base model is a diffusers folder or a .safetensors/.ckpt file")
    return _family_of_single_file(path)


class _TorchvisionNotice(logging.Filter):
    """transformers warns at each start that torchvision is missing and PIL serves instead: that is
    how this project runs (torchvision would pull a CUDA torch), so the notice is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


_TORCHVISION_NOTICE = _TorchvisionNotice()


def quiet_libraries() -> None:
    """Progress bars (loading, "Writing model shards") and known-harmless notices from diffusers and
    transformers would flood job logs and the demo's console."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    notices = logging.getLogger("transformers.utils.import_utils")
    if _TORCHVISION_NOTICE not in notices.filters:
        notices.addFilter(_TORCHVISION_NOTICE)


# diffusers/accelerate build models on the meta device by patching torch's global module
# constructors for the duration of a load; two loads at once in one process (the embedded worker's
# two threads) see each other's patches and fail with "expected device meta but got cpu".
MODEL_LOAD_LOCK = threading.RLock()


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load models one at a time per process (see MODEL_LOAD_LOCK); the rest is `_load_model`."""
    with MODEL_LOAD_LOCK:
        return _load_model(spec)


def _load_model(spec: ModelSpec) -> LoadedModel:
    """Load the UNet, VAE, text encoder(s) and tokenizer(s) described by ``spec`` on CPU in fp32.

    Raises :class:`ModelLoadError` for a missing path, a folder that is not a
    diffusers model, a corrupt file, an unknown family or a model of the other
    family.
    """
    if spec.family not in FAMILIES:
        raise ModelLoadError(
            f"unknown model family {spec.family!r}; supported families are {', '.join(FAMILIES)}"
        )
    path = spec.path
    if not path.exists():
        raise ModelLoadError(f"base model not found: {path} does not exist")
    quiet_libraries()
    pipe_cls = _pipeline_class(spec.family)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if spec.family == "sd15":
        kwargs.update(safety_checker=None, requires_safety_checker=False)

    if spec.single_file:
        if not path.is_file():
            raise ModelLoadError(
                f"{path} is a folder; single-file models must be a .safetensors or .ckpt file"
            )
        found = _family_of_single_file(path)
        if found is not None and found != spec.family:
            raise ModelLoadError(f"{path.name} is an {found} checkpoint but the job says {spec.family}")
        if spec.config_dir is None:
            raise ModelLoadError(
                f"{path.name} is a single-file checkpoint; loading it offline needs a local diffusers folder of the"
                " same family for its configs and tokenizer (ModelSpec.config_dir)"
            )
        if not (spec.config_dir / "model_index.json").is_file():
            raise ModelLoadError(f"config folder {spec.config_dir} is not a diffusers model folder; a single-file "
                                 f"checkpoint takes its configs and tokenizers from any diffusers folder of the "
                                 f"same family ({spec.family}) put there")
        try:
            pipe = pipe_cls.from_single_file(str(path), config=str(spec.config_dir), **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"could not load {path.name} as a {spec.family} checkpoint: {exc}") from exc
    else:
        if path.is_file():
            raise ModelLoadError(
                f"{path} is a file; pass single_file=True (or use a .safetensors/.ckpt suffix)"
            )
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{path} is not a diffusers model folder (model_index.json is missing);"
                " expected subfolders unet/, vae/, text_encoder/, tokenizer/, scheduler/"
            )
        found = _family_of_folder(path)
        if found is None:
            raise ModelLoadError(f"{path} holds a pipeline that is neither SD 1.5 nor SDXL")
        if found != spec.family:
            raise ModelLoadError(f"{path} holds an {found} model but the job says {spec.family}")
        try:
            pipe = pipe_cls.from_pretrained(str(path), **kwargs)
        except Exception as exc:
            raise ModelLoadError(f"could not load the {spec.family} model in {path}: {exc}") from exc

    if spec.family == "sdxl":
        encoders = [pipe.text_encoder, pipe.text_encoder_2]
        tokenizers = [pipe.tokenizer, pipe.tokenizer_2]
    else:
        encoders = [pipe.text_encoder]
        tokenizers = [pipe.tokenizer]
    if any(e is None for e in encoders) or pipe.unet is None or pipe.vae is None:
        raise ModelLoadError(f"{path} is missing a UNet, VAE or text encoder")
    return LoadedModel(
        family=spec.family,
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoders=encoders,
        tokenizers=tokenizers,
        scheduler_config=dict(pipe.scheduler.config),
        source=path,
    )


def tokenize(tokenizer: Any, captions: list[str]) -> Any:
    """Token ids padded/truncated to the tokenizer's max length (77 for CLIP)."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _final_layer_norm(encoder: Any) -> Any:
    # transformers 5 dropped CLIPTextModel's text_model wrapper; 4.x and CLIPTextModelWithProjection keep it.
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


def encode_prompts(
    model: LoadedModel, captions: list[str], device: Any, clip_skip: int = 1
) -> tuple[Any, Any | None]:
    """Encode captions the way the family's pipeline does, ``clip_skip`` layers from the end (A1111's counting).

    SD 1.5: the last hidden state of the CLIP text encoder, no pooled output; clip_skip 2 takes the
    penultimate layer's states through the final layer norm, as A1111, kohya and diffusers do.
    SDXL: the penultimate hidden states of both encoders concatenated on the
    feature axis (clip_skip 2: one layer earlier, like diffusers' ``clip_skip=1``), plus the projected
    pooled output of the second encoder (used for the ``text_embeds`` added condition), never skipped.
    Gradients flow when the encoders have trainable (LoRA) parameters.
    """
    if not model.is_sdxl:
        ids = tokenize(model.tokenizers[0], captions).to(device)
        encoder = model.text_encoders[0]
        if clip_skip == 1:
            return encoder(ids)[0], None
        hidden = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
        return _final_layer_norm(encoder)(hidden), None
    states = []
    pooled = None
    for tok, enc in zip(model.tokenizers, model.text_encoders, strict=True):
        ids = tokenize(tok, captions).to(device)
        out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-(clip_skip + 1)])
        pooled = out[0] if getattr(out, "text_embeds", None) is None else out.text_embeds
    import torch

    return torch.cat(states, dim=-1), pooled


def sdxl_time_ids(
    original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int]
) -> list[int]:
    """SDXL micro-conditioning vector: (orig_h, orig_w, crop_top, crop_left, target_h, target_w)."""
    return [*original_size, *crop_top_left, *target_size]
