"""Steps per second of our trainer against a reference loop; prints ONE JSON object on its last line.

Ours is ``training_app.trainer.train`` (latents and text embeddings cached once, then UNet-only
steps). The reference is a loop written here to do the per-step work of diffusers'
``train_text_to_image_lora.py`` example and nothing slower: image resize/crop/flip, tokenize, VAE
encode, text encode, noise, UNet forward/backward through peft LoRA on the same modules, gradient
clipping, AdamW step, LR schedule step, zero_grad. Both get the same tiny SD 1.5 model (built from
configs, random weights, nothing downloaded), images, rank, resolution, batch, steps and seed.

Honest-measurement rules: torch threads pinned (``--threads``, default 1); ``--repetitions`` A/B pairs
(default 5) run in this one process, the order alternating (AB, BA, ...) so drift hits both; warm-up
steps are not timed; model loading (and for ours, caching) is timed separately and reported on the
line before the last, never in steps/s. ``speedup_vs_reference`` is the median of the per-pair
ratios, ``speedup_min``/``speedup_max`` their extremes; ``load_avg`` is ``os.getloadavg()`` at the
end (the machine is shared: read the spread with it)::

    .venv/bin/python benchmarks/trainer_throughput.py [--repetitions 5 --steps 30 --warmup 5 --threads 1]
    .venv/bin/python benchmarks/trainer_throughput.py --quick     # 2 pairs, a few steps: a smoke run

Full-size GPU figures (SD 1.5 / SDXL shapes) come from ``benchmarks/gpu_suite.sh``.
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

CAPTION = "a photo of shape {}"


def pin_threads(threads: int) -> None:
    """Pin torch's intra-op and (where still allowed) inter-op thread pools."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only settable before the first parallel work in this process
        pass


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


def steps_per_s(times: list[float], warmup: int) -> float:
    """Rate over the step-end times after ``warmup`` steps (the first timed interval starts at warm-up's end)."""
    timed = times[warmup - 1 :] if warmup > 0 else times
    return (len(timed) - 1) / (timed[-1] - timed[0])


def run_ours(model_dir: Path, paths: list[Path], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from training_app.trainer import DatasetItem, ModelSpec, TrainConfig, TrainSpec, train
    from training_app.trainer.reporter import PHASE_TRAINING, RecordingReporter

    class Timed(RecordingReporter):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.training_at: float | None = None

        def phase(self, name: str, done: int = 0, total: int = 0) -> None:
            super().phase(name, done, total)
            if name == PHASE_TRAINING and self.training_at is None:
                self.training_at = time.perf_counter()

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
    items = tuple(DatasetItem(p, CAPTION.format(i)) for i, p in enumerate(paths))
    rep = Timed()
    t0 = time.perf_counter()
    train(TrainSpec(ModelSpec(model_dir, "sd15"), items, cfg, out, device=args.device), rep)
    assert rep.training_at is not None
    return {
        "steps_per_s": steps_per_s(rep.times, args.warmup),
        "setup_s": rep.training_at - t0,  # load + LoRA + latent/text caches
        "losses": list(rep.losses),
    }


def run_reference(model_dir: Path, paths: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """The example's per-step work: transforms, tokenize, VAE and text encoder every step, then the UNet step."""
    import random

    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from peft import LoraConfig
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    from datasets_app import imaging

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
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
    captions = [CAPTION.format(i) for i in range(len(paths))]
    rng = random.Random(args.seed)
    load_s = time.perf_counter() - t0

    def batch() -> tuple[Any, Any]:
        idx = rng.sample(range(len(images)), args.batch_size)
        pix = []
        for i in idx:  # Resize + CenterCrop + RandomHorizontalFlip + ToTensor + Normalize, per step
            img, _ = imaging.resize_and_crop(images[i], args.resolution, args.resolution)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).reshape(img.height, img.width, 3)
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
    return {"steps_per_s": steps_per_s(times, args.warmup), "setup_s": load_s, "losses": losses}


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def benchmark(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the interleaved pairs; returns (the summary, the details)."""
    import torch

    from training_app.trainer.tiny import build_tiny_model

    pin_threads(args.threads)
    ours_rates, ref_rates, ratios = [], [], []
    ours_setup, ref_setup = [], []
    last: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", "sd15", seed=0)
        paths = draw_images(root / "images")
        for rep in range(args.repetitions):
            order = ("reference", "ours") if rep % 2 == 0 else ("ours", "reference")
            for which in order:
                if which == "ours":
                    last["ours"] = run_ours(model, paths, root / f"out{rep}", args)
                else:
                    last["reference"] = run_reference(model, paths, args)
            ours, ref = last["ours"], last["reference"]
            ours_rates.append(ours["steps_per_s"])
            ref_rates.append(ref["steps_per_s"])
            ratios.append(ours["steps_per_s"] / ref["steps_per_s"])
            ours_setup.append(ours["setup_s"])
            ref_setup.append(ref["setup_s"])
    w = max(1, min(5, args.steps // 2))
    details = {
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "order": "alternating AB/BA pairs in one process",
        "ours_steps_per_s_each": [round(x, 3) for x in ours_rates],
        "reference_steps_per_s_each": [round(x, 3) for x in ref_rates],
        "speedup_each": [round(x, 3) for x in ratios],
        "ours_setup_s_median": round(_median(ours_setup), 3),
        "reference_load_s_median": round(_median(ref_setup), 3),
        "setup_note": "ours: load + LoRA + latent/text caches; reference: load + LoRA; neither is in steps/s",
        "loss_first_last": [round(_mean(last["ours"]["losses"][:w]), 4), round(_mean(last["ours"]["losses"][-w:]), 4)],
        "reference_loss_first_last": [
            round(_mean(last["reference"]["losses"][:w]), 4),
            round(_mean(last["reference"]["losses"][-w:]), 4),
        ],
    }
    summary = {
        "steps_per_s": round(_median(ours_rates), 3),
        "reference_steps_per_s": round(_median(ref_rates), 3),
        "speedup_vs_reference": round(_median(ratios), 3),
        "speedup_min": round(min(ratios), 3),
        "speedup_max": round(max(ratios), 3),
        "threads": args.threads,
        "rank": args.rank,
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "repetitions": args.repetitions,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    return summary, details


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of one timed tiny-model run, shared with trainer_levers.py."""
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repetitions", type=int, default=5, help="A/B pairs (>= 5 for a figure)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-/inter-op threads")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 pairs of a few steps: a smoke run, not a figure")


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.repetitions, args.steps, args.warmup = 2, 3, 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(ap)
    args = ap.parse_args(argv)
    apply_quick(args)
    if args.repetitions < 1 or args.steps < 2 or args.warmup < 1:
        ap.error("need --repetitions >= 1, --steps >= 2 and --warmup >= 1")
    return args


def main() -> None:
    summary, details = benchmark(parse_args())
    print(json.dumps(details))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
