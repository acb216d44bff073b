"""Throughput benchmark for the LoRA trainer; prints ONE JSON object on its last line.

Default (tiny, CPU): builds the tiny SD 1.5 model in a temp dir and compares
our ``train()`` against a reference loop written like diffusers'
``examples/text_to_image/train_text_to_image_lora.py`` (per-step image
transforms, VAE encode and text encode every step, peft LoRA on the same
modules, AdamW), same data, resolution, batch, steps and seed::

    .venv/bin/python benchmarks/trainer_throughput.py [--steps 60 --warmup 10 --batch-size 2]

Full-size UNet step (``--arch sd15|sdxl``): a UNet with the published SD 1.5
or SDXL-base config and random weights (nothing downloaded), LoRA attached the
way the trainer does it, random latents/text embeddings of the right shapes
(the VAE and text encoders are off the hot path once cached). Reports seconds
per step, peak VRAM and MFU from a FlopCounterMode count of one forward+backward::

    python benchmarks/trainer_throughput.py --device cuda --arch sd15 --resolution 512
    python benchmarks/trainer_throughput.py --device cuda --arch sdxl --resolution 1024
    python benchmarks/trainer_throughput.py --device cpu --arch sd15 --resolution 64 --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=2048,
    attention_head_dim=(5, 10, 20),
    use_linear_projection=True,
    transformer_layers_per_block=(1, 2, 10),
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
    flip_sin_to_cos=True,
    freq_shift=0,
)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


# ------------------------------------------------------------------ tiny: ours vs reference


def draw_images(folder: Path, n: int = 4) -> list[Path]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        colour = ((60 * i) % 255, (120 + 50 * i) % 255, (200 - 40 * i) % 255)
        img = Image.new("RGB", (80, 64), tuple(255 - c for c in colour))
        ImageDraw.Draw(img).ellipse((10 + 4 * i, 8, 60, 56), fill=colour)
        paths.append(folder / f"{i}.png")
        img.save(paths[-1])
    return paths


def run_ours(model_dir: Path, paths: list[Path], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from training_app.trainer import DatasetItem, ModelSpec, TrainConfig, TrainSpec, train
    from training_app.trainer.reporter import RecordingReporter

    class Timed(RecordingReporter):
        def step(self, step: int, total: int, loss: float, lr: float) -> None:
            super().step(step, total, loss, lr)
            self.times.append(time.perf_counter())

    cfg = TrainConfig(
        rank=args.rank,
        learning_rate=args.lr,
        resolution=args.resolution,
        batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        seed=args.seed,
        bucketing=False,
        flip_aug=True,
        max_grad_norm=1.0,
    )
    items = tuple(DatasetItem(p, f"a photo of shape {i}") for i, p in enumerate(paths))
    rep = Timed()
    rep.times = []
    t0 = time.perf_counter()
    train(TrainSpec(ModelSpec(model_dir, "sd15"), items, cfg, out, device=args.device), rep)
    total = time.perf_counter() - t0
    timed = rep.times[args.warmup - 1 :]
    return {"steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]), "losses": rep.losses, "wall_s": total}


def run_reference(model_dir: Path, paths: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """The diffusers example's hot loop: transforms, VAE and text encoder run every step."""
    import random

    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    from datasets_app import imaging

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok = CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(model_dir, subfolder="vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet").requires_grad_(False)
    sched = DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler")
    unet.add_adapter(
        LoraConfig(
            r=args.rank,
            lora_alpha=args.rank,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        )
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    lr_sched = get_scheduler("constant", optimizer=opt, num_warmup_steps=0, num_training_steps=args.steps)
    images = [Image.open(p).convert("RGB") for p in paths]
    captions = [f"a photo of shape {i}" for i in range(len(paths))]
    rng = random.Random(args.seed)

    def batch() -> tuple[Any, Any]:
        idx = rng.sample(range(len(images)), args.batch_size)
        pix = []
        for i in idx:  # Resize + CenterCrop + RandomHorizontalFlip + ToTensor + Normalize, per step
            img, _ = imaging.resize_and_crop(images[i], args.resolution, args.resolution)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(
                img.height, img.width, 3
            )
            pix.append(t.permute(2, 0, 1).float() / 127.5 - 1)
        ids = tok(
            [captions[i] for i in idx],
            max_length=tok.model_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return torch.stack(pix), ids

    unet.train()
    losses, times = [], []
    for _ in range(args.warmup + args.steps):
        pixels, ids = batch()
        latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],)).long()
        noisy = sched.add_noise(latents, noise, timesteps)
        hidden = te(ids, return_dict=False)[0]
        pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        times.append(time.perf_counter())
    timed = times[args.warmup - 1 :]
    return {"steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]), "losses": losses}


def tiny_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from training_app.trainer.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", "sd15", seed=0)
        paths = draw_images(root / "images")
        ref = run_reference(model, paths, args)
        ours = run_ours(model, paths, root / "out", args)
    w = min(10, args.steps)
    return {
        "mode": "tiny",
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "steps_per_s": round(ours["steps_per_s"], 2),
        "reference_steps_per_s": round(ref["steps_per_s"], 2),
        "speedup_vs_reference": round(ours["steps_per_s"] / ref["steps_per_s"], 2),
        "loss_first": round(_mean(ours["losses"][:w]), 4),
        "loss_last": round(_mean(ours["losses"][-w:]), 4),
        "reference_loss_first": round(_mean(ref["losses"][:w]), 4),
        "reference_loss_last": round(_mean(ref["losses"][-w:]), 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


# ------------------------------------------------------------------ full-size UNet step


def unet_step_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from training_app.trainer.config import TrainConfig
    from training_app.trainer.lora import attach_lora
    from training_app.trainer.losses import diffusion_loss
    from training_app.trainer.noise import add_noise

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    dtype = torch.bfloat16 if on_cuda else torch.float32
    sdxl = args.arch == "sdxl"
    torch.manual_seed(args.seed)
    unet = UNet2DConditionModel(**(SDXL_UNET if sdxl else SD15_UNET))
    cfg = TrainConfig(
        rank=args.rank, resolution=args.resolution, gradient_checkpointing=args.gradient_checkpointing
    )
    attach_lora(unet, [], cfg)
    unet.to(device)
    for p in unet.parameters():  # frozen base in bf16, LoRA weights fp32 (as the trainer does on GPU)
        p.data = p.data.float() if p.requires_grad else p.data.to(dtype)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    acp = torch.linspace(0.9991, 0.0047, 1000, device=device)  # SD-like alphas_cumprod
    lat = args.resolution // 8

    def step(bsz: int) -> None:
        latents = torch.randn(bsz, 4, lat, lat, device=device)
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (bsz,), device=device)
        hidden = torch.randn(bsz, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
        added = None
        if sdxl:
            added = {
                "text_embeds": torch.randn(bsz, 1280, device=device, dtype=dtype),
                "time_ids": torch.tensor(
                    [[args.resolution] * 2 + [0, 0] + [args.resolution] * 2] * bsz, device=device, dtype=dtype
                ),
            }
        ctx = torch.autocast("cuda", dtype=dtype) if on_cuda else torch.autocast("cpu", enabled=False)
        with ctx:
            pred = unet(
                add_noise(latents, noise, acp, t).to(dtype), t, hidden, added_cond_kwargs=added
            ).sample
        diffusion_loss(pred, noise).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    with FlopCounterMode(display=False) as counter:
        step(1)
    flops_b1 = counter.get_total_flops()
    results = []
    sizes = [int(b) for b in args.batch_sizes.split(",")] if on_cuda else [1]
    for bsz in sizes:
        try:
            if on_cuda:
                torch.cuda.reset_peak_memory_stats()
            for _ in range(args.warmup if on_cuda else 1):
                step(bsz)
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(bsz)
            sync()
            s = (time.perf_counter() - t0) / args.steps
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        flops = flops_b1 * bsz
        results.append(
            {
                "batch_size": bsz,
                "s_per_step": round(s, 4),
                "images_per_s": round(bsz / s, 2),
                "peak_vram_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_cuda else None,
                "tflops_per_step": round(flops / 1e12, 3),
                "mfu": round(flops / s / (args.peak_tflops * 1e12), 4),
            }
        )
    best = max(results, key=lambda r: r["images_per_s"])
    return {
        "mode": "unet_step",
        "arch": args.arch,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_cuda else "cpu",
        "resolution": args.resolution,
        "dtype": str(dtype).replace("torch.", ""),
        "rank": args.rank,
        "gradient_checkpointing": args.gradient_checkpointing,
        "peak_tflops": args.peak_tflops,
        **{k: v for k, v in results[0].items()},
        "best": best,
        "sweep": results,
        "unet_params_m": round(sum(p.numel() for p in unet.parameters()) / 1e6, 1),
        "lora_params_m": round(sum(p.numel() for p in params) / 1e6, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", choices=("tiny", "sd15", "sdxl"), default="tiny")
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,2,4,8,16", help="sweep for full-size UNets on CUDA")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    args = ap.parse_args()
    if args.arch == "tiny":
        args.resolution = args.resolution or 64
        args.warmup = 10 if args.warmup is None else max(1, args.warmup)
        out = tiny_benchmark(args)
    else:
        args.resolution = args.resolution or (1024 if args.arch == "sdxl" else 512)
        args.warmup = 3 if args.warmup is None else args.warmup
        out = unet_step_benchmark(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
