"""Training speed and file size of each network on the tiny SD 1.5 model; prints ONE JSON object on its last line.

One torch thread. Each run trains LoRA and then one other network back to back (interleaved A/B, so load
from other processes on a shared machine hits both sides of a pair alike); a network's ratio is the median of
its per-pair ratios, its speed the median over its runs, with the spread (min-max) alongside::

    .venv/bin/python benchmarks/networks.py [--runs 5 --steps 20 --warmup 5]

Keys: ``<network>_steps_per_s``, ``<network>_ratio_vs_lora``, ``<network>_file_kb`` (the kohya/LyCORIS file)
for lora, locon, loha, lokr and dora, plus ``*_spread`` lists and the load average at start and end.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NETWORKS = {
    "lora": {"network": "lora"},
    "locon": {"network": "locon", "conv_rank": 8},
    "loha": {"network": "loha"},
    "lokr": {"network": "lokr"},
    "dora": {"network": "lora", "dora": True},
}


def draw_images(folder: Path, n: int = 4) -> list[Path]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        colour = ((60 * i) % 255, (120 + 50 * i) % 255, (200 - 40 * i) % 255)
        img = Image.new("RGB", (64, 64), tuple(255 - c for c in colour))
        ImageDraw.Draw(img).ellipse((8 + 4 * i, 8, 56, 56), fill=colour)
        paths.append(folder / f"{i}.png")
        img.save(paths[-1])
    return paths


def timed_run(model_dir: Path, paths: list[Path], out: Path, options: dict, args: argparse.Namespace) -> tuple:
    """Steps per second after the warm-up steps, and the kohya file's size in kB."""
    from training_app.trainer import DatasetItem, ModelSpec, TrainConfig, TrainSpec, train
    from training_app.trainer.reporter import RecordingReporter

    class Timed(RecordingReporter):
        def step(self, step: int, total: int, loss: float, lr: float) -> None:
            super().step(step, total, loss, lr)
            self.times.append(time.perf_counter())

    config = TrainConfig(rank=args.rank, resolution=64, batch_size=2, max_steps=args.warmup + args.steps,
                         learning_rate=1e-3, seed=7, bucketing=False, log_every_n_steps=0, **options)
    items = tuple(DatasetItem(p, f"a photo of shape {i}") for i, p in enumerate(paths))
    reporter = Timed()
    reporter.times = []
    result = train(TrainSpec(ModelSpec(model_dir, "sd15"), items, config, out, device="cpu"), reporter)
    timed = reporter.times[args.warmup - 1:]
    return (len(timed) - 1) / (timed[-1] - timed[0]), result.lora_kohya_path.stat().st_size / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from training_app.trainer.tiny import build_tiny_model

    load_start = os.getloadavg()
    speeds: dict[str, list[float]] = {name: [] for name in NETWORKS}
    ratios: dict[str, list[float]] = {name: [] for name in NETWORKS if name != "lora"}
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_model(root / "model", family="sd15", seed=0)
        paths = draw_images(root / "images")
        for run in range(args.runs):
            for name in ratios:
                lora_speed, sizes["lora"] = timed_run(model_dir, paths, root / f"lora-{run}-{name}",
                                                      NETWORKS["lora"], args)
                speed, sizes[name] = timed_run(model_dir, paths, root / f"{name}-{run}", NETWORKS[name], args)
                speeds["lora"].append(lora_speed)
                speeds[name].append(speed)
                ratios[name].append(speed / lora_speed)
                print(f"run {run} {name}: {speed:.2f} steps/s vs lora {lora_speed:.2f}", file=sys.stderr, flush=True)
    out: dict[str, object] = {}
    for name in NETWORKS:
        out[f"{name}_steps_per_s"] = round(statistics.median(speeds[name]), 3)
        out[f"{name}_steps_per_s_spread"] = [round(min(speeds[name]), 3), round(max(speeds[name]), 3)]
        out[f"{name}_ratio_vs_lora"] = 1.0 if name == "lora" else round(statistics.median(ratios[name]), 3)
        if name != "lora":
            out[f"{name}_ratio_spread"] = [round(min(ratios[name]), 3), round(max(ratios[name]), 3)]
        out[f"{name}_file_kb"] = round(sizes[name], 1)
    out.update({"runs": args.runs, "steps": args.steps, "rank": args.rank, "torch_threads": 1,
                "loadavg_start": [round(x, 2) for x in load_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()]})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
