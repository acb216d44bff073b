"""Command line: ``python -m training_app.trainer make-tiny|train ...``.

A thin wrapper for operators and demos; the portal calls :func:`train` directly.
``train`` reads captions from ``<image>.txt`` sidecar files when present.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import DatasetItem, ModelSpec, TrainConfig, TrainerConfigError, TrainSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def _items(folder: Path) -> tuple[DatasetItem, ...]:
    items = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            caption_file = path.with_suffix(".txt")
            caption = caption_file.read_text(encoding="utf-8").strip() if caption_file.is_file() else ""
            items.append(DatasetItem(path, caption))
    return tuple(items)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns a process exit code."""
    parser = argparse.ArgumentParser(prog="python -m training_app.trainer")
    sub = parser.add_subparsers(dest="command", required=True)
    tiny = sub.add_parser("make-tiny", help="build a tiny random-weight model folder")
    tiny.add_argument("outdir", type=Path)
    tiny.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    tiny.add_argument("--seed", type=int, default=0)
    tr = sub.add_parser("train", help="train a LoRA on a folder of images (+ .txt captions)")
    tr.add_argument("--model", type=Path, required=True, help="diffusers folder or single .safetensors file")
    tr.add_argument("--family", choices=("sd15", "sdxl"), default="sd15")
    tr.add_argument("--config-dir", type=Path, help="diffusers folder with configs, for single-file models")
    tr.add_argument("--images", type=Path, required=True)
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--config", help="TrainConfig as a JSON object, or @file.json")
    tr.add_argument("--device")
    tr.add_argument("--resume", nargs="?", const="latest", help="checkpoint folder, or 'latest'")
    args = parser.parse_args(argv)

    if args.command == "make-tiny":
        from .tiny import build_tiny_model

        print(build_tiny_model(args.outdir, family=args.family, seed=args.seed))
        return 0

    from .checkpoint import latest_checkpoint
    from .loop import train
    from .models import ModelLoadError
    from .reporter import PrintReporter

    try:
        raw = args.config or "{}"
        if raw.startswith("@"):
            raw = Path(raw[1:]).read_text(encoding="utf-8")
        cfg = TrainConfig.from_dict(json.loads(raw))
        resume = None
        if args.resume == "latest":
            resume = latest_checkpoint(args.out)
        elif args.resume:
            resume = Path(args.resume)
        spec = TrainSpec(
            model=ModelSpec(args.model, args.family, config_dir=args.config_dir),
            items=_items(args.images),
            config=cfg,
            output_dir=args.out,
            device=args.device,
            resume_from=resume,
            metadata={"output_name": args.out.name},
        )
        result = train(spec, PrintReporter())
    except (TrainerConfigError, ModelLoadError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "steps": result.steps_completed,
                "final_loss": result.final_loss,
                "lora": str(result.lora_kohya_path),
                "diffusers": str(result.lora_diffusers_path),
            }
        )
    )
    return 0
