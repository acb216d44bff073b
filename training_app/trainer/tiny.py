"""Tiny randomly-initialised SD-1.5- and SDXL-shaped models for tests and demos.

The portal must be testable without downloading gigabytes of weights, so this
module builds complete diffusers pipeline folders (UNet, VAE, CLIP text
encoder(s), CLIP tokenizer, DDPM scheduler) from small configs with random
weights, deterministically from a seed. The shapes follow the real families
(8x VAE downsampling, 4 latent channels, cross-attention on CLIP hidden states,
SDXL's two text encoders and ``text_time`` conditioning) so every code path of
the trainer is exercised; only the widths are tiny.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOKENIZER_MAX_LENGTH = 77
_TEXT_HIDDEN = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode table (same as the original tokenizer)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_tiny_tokenizer(out_dir: Path) -> Path:
    """Write a small byte-level CLIP tokenizer (vocab.json + merges.txt + configs).

    Every byte exists both as a word-piece and as a word end (``</w>``) so any
    text tokenises; a handful of merges for common English pairs keep prompts
    reasonably short. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    # Word ends are part of the initial symbol ("e</w>"), never a symbol of their own.
    pairs = [("t", "h"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n"), ("th", "e</w>"), ("in", "g</w>")]
    merges = []
    for a, b in pairs:
        merged = a + b
        merges.append(f"{a} {b}")
        if merged not in vocab_list:
            vocab_list.append(merged)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return out_dir


def _tokenizer(tmp: Path) -> Any:
    from transformers import CLIPTokenizer

    write_tiny_tokenizer(tmp)
    return CLIPTokenizer.from_pretrained(str(tmp), model_max_length=TOKENIZER_MAX_LENGTH)


def _text_config(vocab_size: int, bos: int, eos: int, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        hidden_act="quick_gelu",
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
        **extra,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    # Four blocks -> 8x downsampling like the real SD VAE, at a fraction of the width.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _scheduler(prediction_type: str) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type=prediction_type,
        steps_offset=1,
    )


def build_tiny_model(
    out_dir: str | os.PathLike[str], family: str = "sd15", seed: int = 0, prediction_type: str = "epsilon"
) -> Path:
    """`_build_tiny_model` under the process-wide model lock (building patches global torch state too)."""
    from .models import MODEL_LOAD_LOCK, quiet_libraries

    quiet_libraries()
    with MODEL_LOAD_LOCK:
        return _build_tiny_model(out_dir, family, seed, prediction_type)


def _build_tiny_model(
    out_dir: str | os.PathLike[str], family: str = "sd15", seed: int = 0, prediction_type: str = "epsilon"
) -> Path:
    """Build a tiny random-weight diffusers pipeline folder and return its path.

    ``family`` is ``"sd15"`` or ``"sdxl"``. The result loads with
    ``StableDiffusionPipeline.from_pretrained`` / ``StableDiffusionXLPipeline.from_pretrained``
    offline and is a few MB. The same ``seed`` always gives the same weights.
    """
    import tempfile

    import torch
    from diffusers import UNet2DConditionModel

    if family not in ("sd15", "sdxl"):
        raise ValueError(f"unknown model family {family!r}; use 'sd15' or 'sdxl'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tokenizer(Path(tmp))
    vocab_size = len(tokenizer)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id

    torch.manual_seed(seed)
    vae = _vae()
    scheduler = _scheduler(prediction_type)
    common_unet = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
    )
    if family == "sd15":
        from diffusers import StableDiffusionPipeline
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=_TEXT_HIDDEN,
            attention_head_dim=8,
            **common_unet,
        )
        text_encoder = CLIPTextModel(_text_config(vocab_size, bos, eos))
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        from diffusers import StableDiffusionXLPipeline
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        text_encoder = CLIPTextModel(_text_config(vocab_size, bos, eos))
        text_encoder_2 = CLIPTextModelWithProjection(
            _text_config(vocab_size, bos, eos, projection_dim=_TEXT_HIDDEN)
        )
        time_dim = 8
        unet = UNet2DConditionModel(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * _TEXT_HIDDEN,  # penultimate states of both encoders, concatenated
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            # 6 size/crop numbers embedded with time_dim each + the pooled projection of encoder 2.
            projection_class_embeddings_input_dim=6 * time_dim + _TEXT_HIDDEN,
            **common_unet,
        )
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
        )
    pipe.save_pretrained(out, safe_serialization=True)
    # Also ship the slow-tokenizer files, which older loaders (and people) look for.
    for sub in ("tokenizer", "tokenizer_2") if family == "sdxl" else ("tokenizer",):
        write_tiny_tokenizer(out / sub)
    return out


def folder_size_bytes(path: Path) -> int:
    """Total size of all files under ``path`` (used to assert the model stays tiny)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
