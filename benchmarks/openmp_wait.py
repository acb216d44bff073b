"""OpenMP wait policy: training speed with spinning (ACTIVE) and sleeping (PASSIVE) waiters.

Each run is a fresh `python -m training_app.trainer train` process (the policy is read when torch
loads its OpenMP runtime) on the tiny SD 1.5 model, 64 px, batch 2, rank 8. The configurations run
interleaved, `--repetitions` rounds each, first on an otherwise idle machine and then beside one
busy neighbour process (a single-threaded loop, what a second job, a web request or a test does to
a training). Steps per second come from the trainer's own final progress line.

    .venv/bin/python benchmarks/openmp_wait.py [--repetitions 5] [--steps 40]

Last line: {"idle": {...}, "contended": {...}, "passive_vs_active_idle", "passive_vs_active_contended",
"one_thread_vs_active_contended", ...} with medians and spreads of steps/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "active_2": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"},
    "passive_2": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "passive_1": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
}
RATE = re.compile(r"steps: 100% \d+/\d+.*?([\d.]+) (it/s|s/it)")


def prepare(folder: Path) -> tuple[Path, Path]:
    images = folder / "imgs"
    images.mkdir()
    for i in range(4):
        img = Image.new("RGB", (96, 96), [(30, 60, 160), (200, 60, 40), (40, 150, 80), (230, 190, 40)][i])
        ImageDraw.Draw(img).ellipse([10 + i * 8, 20, 60 + i * 8, 70], fill=(250, 250, 250))
        img.save(images / f"s{i}.png")
        (images / f"s{i}.txt").write_text("shp, a circle")
    model = folder / "tiny"
    subprocess.run([sys.executable, "-m", "training_app.trainer", "make-tiny", str(model), "--family", "sd15"],
                   cwd=ROOT, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return model, images


def one_run(name: str, model: Path, images: Path, out: Path, steps: int) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **CONFIGS[name]}
    config = json.dumps({"resolution": 64, "max_steps": steps, "rank": 8, "batch_size": 2,
                         "sample_every_n_steps": 0})
    done = subprocess.run([sys.executable, "-m", "training_app.trainer", "train", "--model", str(model),
                           "--images", str(images), "--out", str(out), "--config", config],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    matches = list(RATE.finditer(done.stdout + done.stderr))
    match = matches[-1] if matches else None
    if done.returncode != 0 or match is None:
        raise SystemExit(f"{name} run failed:\n{done.stderr[-2000:]}")
    value = float(match.group(1))
    return value if match.group(2) == "it/s" else 1.0 / value


def series(model: Path, images: Path, work: Path, steps: int, repetitions: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for round_no in range(repetitions):
        # Rotate the order each round so no configuration always runs first after a pause.
        names = list(CONFIGS)[round_no % len(CONFIGS):] + list(CONFIGS)[:round_no % len(CONFIGS)]
        for name in names:
            out = work / f"run-{name}-{round_no}-{len(rates[name])}"
            rates[name].append(one_run(name, model, images, out, steps))
    return rates


def summary(rates: dict[str, list[float]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for name, values in rates.items():
        result[f"{name}_steps_per_s"] = round(statistics.median(values), 2)
        result[f"{name}_spread"] = [round(min(values), 2), round(max(values), 2)]
    return result


def ratio(rates: dict[str, list[float]], a: str, b: str) -> float:
    """Median of the per-round ratios a/b (rounds are interleaved, so each pair saw the same load)."""
    return round(statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, images = prepare(work)
        idle = series(model, images, work, args.steps, args.repetitions)
        neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            contended = series(model, images, work, args.steps, args.repetitions)
        finally:
            neighbour.kill()
            neighbour.wait()
    print(json.dumps({
        "idle": summary(idle),
        "contended": summary(contended),
        "passive_vs_active_idle": ratio(idle, "passive_2", "active_2"),
        "passive_vs_active_contended": ratio(contended, "passive_2", "active_2"),
        "one_thread_vs_active_contended": ratio(contended, "passive_1", "active_2"),
        "passive_2_vs_1_idle": ratio(idle, "passive_2", "passive_1"),
        "repetitions": args.repetitions, "steps": args.steps, "cpus": len(os.sched_getaffinity(0)),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
