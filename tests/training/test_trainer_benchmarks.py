"""The trainer benchmarks run and print what docs/benchmarks.md relies on (keys and sane values; never a
speed: the figures come from the scripts themselves, on a machine whose load they report)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

THROUGHPUT_KEYS = {"steps_per_s", "reference_steps_per_s", "speedup_vs_reference", "speedup_min", "speedup_max",
                   "threads", "rank", "resolution", "batch_size", "repetitions", "load_avg"}
SUITE_FIELDS = {"case", "s_per_step", "images_per_s", "peak_vram_gb", "mfu", "loss_trace", "loss_fell", "skipped"}


def _run(*cmd: str) -> list[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, check=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable})
    return [line for line in out.stdout.splitlines() if line.strip()]


def test_throughput_quick_prints_the_summary_keys_with_sane_values() -> None:
    summary = json.loads(_run(sys.executable, "benchmarks/trainer_throughput.py", "--quick")[-1])
    assert set(summary) == THROUGHPUT_KEYS
    for key in ("steps_per_s", "reference_steps_per_s", "speedup_vs_reference", "speedup_min", "speedup_max"):
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    assert summary["speedup_min"] <= summary["speedup_vs_reference"] <= summary["speedup_max"]
    assert (summary["threads"], summary["rank"], summary["resolution"], summary["batch_size"]) == (1, 16, 64, 2)
    assert summary["repetitions"] == 2 and len(summary["load_avg"]) == 3


def test_flops_quick_counts_more_work_for_the_reference_than_for_ours() -> None:
    out = json.loads(_run(sys.executable, "benchmarks/trainer_flops.py", "--family", "sd15", "--quick")[-1])
    assert {"sd15_ours_tflop", "sd15_ref_tflop", "sd15_ratio", "amortisation"} <= set(out)
    assert 0 < out["sd15_ours_tflop"] < out["sd15_ref_tflop"]
    assert out["sd15_ratio"] > 1
    # Gradient checkpointing recomputes the forward: counted, so it costs more than without.
    assert out["sd15_ours_gc_tflop"] > out["sd15_ours_tflop"]


def test_gpu_suite_smoke_prints_one_complete_line_per_case() -> None:
    lines = [json.loads(line) for line in _run("benchmarks/gpu_suite.sh", "--smoke")]
    assert len(lines) == 12 and len({line["case"] for line in lines}) == 12
    for line in lines:
        assert SUITE_FIELDS <= set(line), line["case"]
        if line["skipped"] is None:
            assert line["s_per_step"] > 0 and line["images_per_s"] > 0
            assert line["loss_trace"] and all(math.isfinite(x) for x in line["loss_trace"])
            assert isinstance(line["loss_fell"], bool)
        else:
            assert line["optimizer"] == "adamw8bit" and line["s_per_step"] is None
    assert sum(line["skipped"] is None for line in lines) >= 8
