"""The trainer's UNet step at full SD 1.5 / SDXL shapes on one GPU: one JSON line per case.

Run through ``benchmarks/gpu_suite.sh`` (it bounds the whole suite's time). The GPU nodes have no
network, so the models are the published SD 1.5 / SDXL-base shapes built from
``benchmarks/model_configs`` with RANDOM weights: right for speed and memory, meaningless for image
quality (every line says so in ``weights``). Each case runs what the trainer runs per step once its
caches are filled (``training_app.trainer``'s LoRA attachment, noise, loss, optimizer, LR schedule,
autocast and fp16 GradScaler; frozen weights in the half dtype, LoRA in fp32): cached latents and text
embeddings stand in as fixed tensors of the right shapes, one fixed batch for all steps, so the loss
trace shows whether the LoRA learns at all (``loss_fell``: the last 5 steps' mean below the first 5's).

Fields: ``case``, ``s_per_step`` (median over the timed steps, each synchronised by reading the loss),
``images_per_s``, ``peak_vram_gb``, ``mfu`` (FLOPs of a step without recomputation, counted as in
``benchmarks/trainer_flops.py``, per second, over the card's dense bf16 peak from ``PEAK_BF16_TFLOPS``;
null on an unknown card or the CPU), ``loss_trace`` and ``loss_fell``. A case that cannot run here
(8-bit AdamW without bitsandbytes or CUDA, out of the time budget, out of memory) prints its line with
``skipped`` set to the reason.

``--channels-last`` runs every case with NHWC UNet weights and latents, to compare with a run
without it (a lever the CPU sandbox can't judge). ``--smoke`` runs the same cases on the CPU with the tiny SD-shaped model at 64 px for a few steps (the
test suite uses it); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainer_flops  # a sibling script: the FLOP count of a step

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, matched against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}
WEIGHTS_NOTE = "random, built from benchmarks/model_configs (no network on GPU nodes): speed only"


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key.lower() in device_name.lower():
            return value
    return None


def cases(smoke: bool) -> list[dict[str, Any]]:
    sd15, sdxl = (64, 64) if smoke else (512, 1024)
    shapes = [
        {"family": "sd15", "resolution": sd15, "batch_size": 1, "gradient_checkpointing": False},
        {"family": "sd15", "resolution": sd15, "batch_size": 4, "gradient_checkpointing": False},
        {"family": "sdxl", "resolution": sdxl, "batch_size": 1, "gradient_checkpointing": True},
        {"family": "sdxl", "resolution": sdxl, "batch_size": 1, "gradient_checkpointing": False},
    ]
    out = []
    for precision, optimizer in (("bf16", "adamw"), ("fp16", "adamw"), ("bf16", "adamw8bit")):
        for shape in shapes:
            gc = "_gc" if shape["gradient_checkpointing"] else ""
            name = f"{shape['family']}_{shape['resolution']}px_b{shape['batch_size']}{gc}_{precision}_{optimizer}"
            out.append({"case": name, **shape, "precision": precision, "optimizer": optimizer})
    return out


def skip_reason(case: dict[str, Any], device: str) -> str | None:
    import importlib.util

    if case["optimizer"] == "adamw8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not importable here"
        if not device.startswith("cuda"):
            return "AdamW 8-bit (bitsandbytes) needs CUDA"
    return None


class FlopCache:
    """Model FLOPs of one step per (family, resolution, batch), counted once on the meta device."""

    def __init__(self, config_dirs: dict[str, Path], rank: int) -> None:
        self.config_dirs, self.rank = config_dirs, rank
        self._done: dict[tuple[str, int, int], int] = {}

    def get(self, family: str, resolution: int, batch: int) -> int:
        key = (family, resolution, batch)
        if key not in self._done:
            unet = trainer_flops.build_models(self.config_dirs[family], unet_only=True)["unet"]
            trainer_flops.attach_trainer_lora(unet, self.rank, gradient_checkpointing=False)
            self._done[key] = trainer_flops.unet_step_flops(unet, batch, resolution)
        return self._done[key]


def run_case(case: dict[str, Any], config_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from training_app.trainer.config import TrainConfig
    from training_app.trainer.losses import diffusion_loss
    from training_app.trainer.noise import add_noise, prediction_target
    from training_app.trainer.optim import build_lr_scheduler, build_optimizer

    device = args.device
    on_cuda = device.startswith("cuda")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}[case["precision"]]
    weight_dtype = half if on_cuda else torch.float32  # as the trainer: half frozen weights on GPU only
    cfg = TrainConfig(
        rank=args.rank,
        learning_rate=args.lr,
        resolution=case["resolution"],
        batch_size=case["batch_size"],
        gradient_checkpointing=case["gradient_checkpointing"],
        mixed_precision=case["precision"],
        optimizer=case["optimizer"],
    )
    torch.manual_seed(0)
    unet = trainer_flops.build_models(config_dir, device=device, unet_only=True)["unet"]
    if weight_dtype != torch.float32:
        unet.to(weight_dtype)
    trainer_flops.attach_trainer_lora(unet, args.rank, case["gradient_checkpointing"], device=device)
    if args.channels_last:
        unet.to(memory_format=torch.channels_last)
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = build_optimizer([{"params": params, "lr": cfg.learning_rate}], cfg, device)
    schedule = build_lr_scheduler(optimizer, cfg, args.warmup + args.steps)
    scaler = torch.amp.GradScaler(device.split(":")[0]) if case["precision"] == "fp16" else None
    inputs = trainer_flops.unet_inputs(unet, case["batch_size"], case["resolution"], device, weight_dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    latents = torch.randn(inputs["sample"].shape, generator=gen).to(device) * 0.18215 * 5  # ~unit variance
    noise = torch.randn(latents.shape, generator=gen).to(device)
    timesteps = torch.randint(0, 1000, (latents.shape[0],), generator=gen).to(device)
    hidden = torch.randn(inputs["encoder_hidden_states"].shape, generator=gen).to(device, weight_dtype)
    alphas_cumprod = torch.linspace(0.9991, 0.0047, 1000, device=device)  # SD's scaled-linear range
    noisy = add_noise(latents, noise, alphas_cumprod, timesteps).to(weight_dtype)
    if args.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    target = prediction_target("epsilon", latents, noise, alphas_cumprod, timesteps)

    def step() -> float:
        with torch.autocast(device.split(":")[0], dtype=half):
            pred = unet(noisy, timesteps, hidden, added_cond_kwargs=inputs["added_cond_kwargs"]).sample
        loss = diffusion_loss(pred, target)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # synchronises the device

    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    losses, times = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    peak_vram = torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None
    w = min(5, len(losses) // 2) or 1
    return {
        "s_per_step": round(s, 4),
        "images_per_s": round(case["batch_size"] / s, 3),
        "peak_vram_gb": None if peak_vram is None else round(peak_vram, 2),
        "loss_trace": [round(x, 5) for x in losses],
        "loss_fell": bool(statistics.fmean(losses[-w:]) < statistics.fmean(losses[:w])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model, 64 px, few steps")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 30; 4 with --smoke)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; 1 with --smoke)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3, help="high on purpose: 30 steps must move the loss")
    ap.add_argument("--budget-s", type=float, default=420.0, help="cases that would start later are skipped")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 with --smoke)")
    ap.add_argument("--channels-last", action="store_true",
                    help="UNet weights and latents in NHWC (a lever to compare against a run without it)")
    args = ap.parse_args()
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.steps = args.steps or (4 if args.smoke else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)

    import torch

    from training_app.trainer.models import quiet_libraries

    quiet_libraries()
    threads = args.threads or (1 if args.smoke else None)
    if threads:
        torch.set_num_threads(threads)
    started = time.monotonic()
    on_cuda = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name(args.device) if on_cuda else "cpu"
    peak = peak_tflops(device_name) if on_cuda else None
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            from training_app.trainer.tiny import build_tiny_model

            config_dirs = {f: build_tiny_model(Path(tmp) / f, f, seed=0) for f in ("sd15", "sdxl")}
        else:
            config_dirs = {f: trainer_flops.CONFIGS / f for f in ("sd15", "sdxl")}
        flops = FlopCache(config_dirs, args.rank)
        for case in cases(args.smoke):
            line: dict[str, Any] = {
                **case,
                "device_name": device_name,
                "weights": "tiny random model (smoke run)" if args.smoke else WEIGHTS_NOTE,
                "steps_timed": args.steps,
                "channels_last": args.channels_last,
                "s_per_step": None,
                "images_per_s": None,
                "peak_vram_gb": None,
                "mfu": None,
                "tflop_per_step": None,
                "peak_bf16_tflops": peak,
                "loss_trace": [],
                "loss_fell": None,
                "skipped": skip_reason(case, args.device),
            }
            if line["skipped"] is None and time.monotonic() - started > args.budget_s:
                line["skipped"] = f"time budget of {args.budget_s:.0f} s spent before this case"
            if line["skipped"] is None:
                try:
                    line.update(run_case(case, config_dirs[case["family"]], args))
                except torch.OutOfMemoryError:
                    line["skipped"] = "out of GPU memory"
                if on_cuda:  # the case's models are gone with its frame; give their memory back
                    torch.cuda.empty_cache()
            if line["skipped"] is None:
                step_flops = flops.get(case["family"], case["resolution"], case["batch_size"])
                line["tflop_per_step"] = round(step_flops / 1e12, 4)
                if peak is not None:
                    line["mfu"] = round(step_flops / line["s_per_step"] / (peak * 1e12), 4)
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
