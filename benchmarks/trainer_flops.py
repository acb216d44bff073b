"""FLOPs per optimizer step, our trainer vs the reference loop, at the real SD 1.5 / SDXL shapes.

The models are built from the published configs in ``benchmarks/model_configs/<family>/`` (a diffusers
folder layout: ``unet``, ``vae``, ``text_encoder`` [, ``text_encoder_2``]) under ``torch.device("meta")``:
nothing is downloaded and no weight is allocated. ``torch.utils.flop_counter.FlopCounterMode`` counts
what a step executes (matmuls, convolutions, attention; not elementwise work, norms or the optimizer's
update, which are the same on both sides and small).

- reference (the diffusers text-to-image LoRA example's step): VAE encode of the batch + text encoder
  forward of its captions + UNet forward/backward through LoRA with a frozen base. The example does not
  train the text encoder, so neither does ours here.
- ours (``training_app.trainer``): the UNet forward/backward through the same LoRA (attached with the
  trainer's ``attach_lora``; with ``--gradient-checkpointing`` the recomputed forward is counted, because
  it runs) + the caches' cost spread over the steps that reuse them. The trainer encodes every (image,
  flip) once with the VAE and every distinct static caption once with the text encoder(s) before
  training; each image is then drawn ``epochs x repeats`` times, so per step of ``batch`` images the
  cache costs ``batch x (flips x VAE(1 image) + text(1 caption)) / (epochs x repeats)``. Defaults are
  TrainConfig's: 10 epochs, 1 repeat, no flip augmentation, one distinct caption per image. (Captions
  that change per step, tag shuffling or dropout, are not cached: ours then pays the text encoder every
  step too; ``--uncached-text`` counts that case.)

Prints ONE JSON object on its last line::

    .venv/bin/python benchmarks/trainer_flops.py                  # sd15 at 512 px and sdxl at 1024 px
    .venv/bin/python benchmarks/trainer_flops.py --family sd15 --quick   # 64 px: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = Path(__file__).resolve().parent / "model_configs"
RESOLUTIONS = {"sd15": 512, "sdxl": 1024}
TOKENS = 77


def build_models(config_dir: Path, device: Any = "meta", unet_only: bool = False) -> dict[str, Any]:
    """UNet, VAE and text encoder(s) from a diffusers-layout folder of configs, random weights on ``device``
    (``unet_only``: just the UNet, for callers that never run the others)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config_dir = Path(config_dir)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        if unet_only:
            return {"unet": unet}
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        encoders = [CLIPTextModel(CLIPTextConfig.from_json_file(config_dir / "text_encoder" / "config.json"))]
        if (config_dir / "text_encoder_2").is_dir():
            cfg2 = CLIPTextConfig.from_json_file(config_dir / "text_encoder_2" / "config.json")
            encoders.append(CLIPTextModelWithProjection(cfg2))
    return {"unet": unet, "vae": vae, "text_encoders": encoders}


def count_flops(fn: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def vae_encode_flops(vae: Any, batch: int, resolution: int, device: Any = "meta") -> int:
    import torch

    pixels = torch.zeros(batch, 3, resolution, resolution, device=device)

    def run() -> None:
        with torch.no_grad():
            vae.encode(pixels).latent_dist.sample()

    return count_flops(run)


def text_encode_flops(encoders: list[Any], batch: int, device: Any = "meta") -> int:
    import torch

    ids = torch.zeros(batch, TOKENS, dtype=torch.long, device=device)

    def run() -> None:
        with torch.no_grad():
            for enc in encoders:
                enc(ids, output_hidden_states=len(encoders) > 1)

    return count_flops(run)


def unet_inputs(unet: Any, batch: int, resolution: int, device: Any, dtype: Any = None) -> dict[str, Any]:
    """Latents, timesteps, text states (and SDXL's added conditions) of the right shapes."""
    import torch

    dtype = dtype or torch.float32
    lat = resolution // 8
    out: dict[str, Any] = {
        "sample": torch.zeros(batch, unet.config.in_channels, lat, lat, device=device, dtype=dtype),
        "timestep": torch.zeros(batch, dtype=torch.long, device=device),
        "encoder_hidden_states": torch.zeros(
            batch, TOKENS, unet.config.cross_attention_dim, device=device, dtype=dtype
        ),
        "added_cond_kwargs": None,
    }
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        out["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(batch, pooled, device=device, dtype=dtype),
            "time_ids": torch.full((batch, 6), float(resolution), device=device, dtype=dtype),
        }
    return out


def attach_trainer_lora(unet: Any, rank: int, gradient_checkpointing: bool, device: Any = "meta") -> Any:
    """The trainer's own LoRA attachment (frozen base, adapters on the attention projections)."""
    import torch

    from training_app.trainer.config import TrainConfig
    from training_app.trainer.lora import attach_lora

    cfg = TrainConfig(rank=rank, gradient_checkpointing=gradient_checkpointing)
    with torch.device(device):
        attach_lora(unet, [], cfg)
    for p in unet.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    unet.train()
    return unet


def unet_step_flops(unet: Any, batch: int, resolution: int, device: Any = "meta") -> int:
    """One UNet forward + backward into the LoRA weights (the base is frozen: no weight gradients for it)."""
    inputs = unet_inputs(unet, batch, resolution, device)

    def run() -> None:
        pred = unet(**inputs).sample
        pred.float().pow(2).mean().backward()
        for p in unet.parameters():
            p.grad = None

    return count_flops(run)


def family_flops(family: str, args: argparse.Namespace) -> dict[str, Any]:
    resolution = args.resolution or RESOLUTIONS[family]
    models = build_models(CONFIGS / family)
    unet = attach_trainer_lora(models["unet"], args.rank, gradient_checkpointing=False)
    unet_step = unet_step_flops(unet, args.batch_size, resolution)
    unet.enable_gradient_checkpointing()
    unet_step_gc = unet_step_flops(unet, args.batch_size, resolution)
    vae_1 = vae_encode_flops(models["vae"], 1, resolution)
    text_1 = text_encode_flops(models["text_encoders"], 1)
    b = args.batch_size
    flips = 2 if args.flip_aug else 1
    uses = args.epochs * args.repeats  # times each cached entry is drawn
    cache_per_step = b * (flips * vae_1 + (0 if args.uncached_text else text_1)) / uses
    text_every_step = b * text_1 if args.uncached_text else 0
    ours = unet_step + cache_per_step + text_every_step
    ours_gc = unet_step_gc + cache_per_step + text_every_step
    ref = b * vae_1 + b * text_1 + unet_step  # VAE and text encoder on every batch
    t = 1e12
    return {
        f"{family}_ours_tflop": round(ours / t, 4),
        f"{family}_ref_tflop": round(ref / t, 4),
        f"{family}_ratio": round(ref / ours, 3),
        f"{family}_ours_gc_tflop": round(ours_gc / t, 4),
        f"{family}_ratio_gc": round(ref / ours_gc, 3),
        f"{family}_resolution": resolution,
        f"{family}_unet_fwd_bwd_tflop": round(unet_step / t, 4),
        f"{family}_unet_fwd_bwd_gc_tflop": round(unet_step_gc / t, 4),
        f"{family}_vae_encode_tflop_per_image": round(vae_1 / t, 4),
        f"{family}_text_encode_tflop_per_caption": round(text_1 / t, 5),
        f"{family}_cache_tflop_per_step": round(cache_per_step / t, 5),
        f"{family}_lora_params_m": round(sum(p.numel() for p in unet.parameters() if p.requires_grad) / 1e6, 3),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=("sd15", "sdxl", "both"), default="both")
    ap.add_argument("--resolution", type=int, default=None, help="default: 512 for sd15, 1024 for sdxl")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=10, help="passes over the data (TrainConfig default 10)")
    ap.add_argument("--repeats", type=int, default=1, help="repeats per image (TrainConfig default 1)")
    ap.add_argument("--flip-aug", action="store_true", help="cache a mirrored latent per image too")
    ap.add_argument("--uncached-text", action="store_true", help="captions change per step: text every step")
    ap.add_argument("--quick", action="store_true", help="64 px: a smoke run, not a figure")
    args = ap.parse_args(argv)
    if args.quick:
        args.resolution = args.resolution or 64
    return args


def main() -> None:
    args = parse_args()
    families = ("sd15", "sdxl") if args.family == "both" else (args.family,)
    out: dict[str, Any] = {}
    for family in families:
        out.update(family_flops(family, args))
    out.update(
        {
            "batch_size": args.batch_size,
            "rank": args.rank,
            "counted": "FlopCounterMode on meta-device models from benchmarks/model_configs (matmul, conv, "
            "attention); ours = UNet fwd+bwd into LoRA + caches amortised; ref = VAE encode + text encode "
            "+ UNet fwd+bwd every step; ratio = ref / ours; *_gc: ours with gradient checkpointing",
            "amortisation": f"each (image, flip) VAE-encoded once and each caption text-encoded once"
            f"{' (text NOT cached: every step)' if args.uncached_text else ''}, reused "
            f"epochs x repeats = {args.epochs} x {args.repeats} times; flips = {2 if args.flip_aug else 1}",
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
