"""Every training preset with its estimates side by side, then a custom config derived from one and
checked by the server's estimate (which validates it exactly as a job submission would).

    LORASITE_URL=... LORASITE_TOKEN=... python examples/configuration_presets.py --images 40 --gpu rtx4090
"""

from __future__ import annotations

import argparse
import json
import sys

from lorasite_client import Client, LorasiteError, ValidationError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="dataset size to estimate for")
    parser.add_argument("--gpu", default="h100", help="GPU class: h100, a100, l40s, rtx4090, rtx3090, a10g, t4, ...")
    parser.add_argument("--base", default="sd15", help="preset the custom config starts from")
    args = parser.parse_args()

    with Client.from_env() as portal:
        try:
            presets = portal.presets()
            print(f"{'preset':<14} {'family':<6} {'steps':>6} {'time':>9} {'VRAM GB':>8} {'file MB':>8} {'fits':>5}  "
                  "cost US$ (replicate)")
            for preset in presets:
                for family in preset.families:
                    local = portal.estimate(preset=preset.name, family=family, image_count=args.images, gpu=args.gpu)
                    cost = _remote_cost(portal, preset.name, family, args.images)
                    size = f"{local.file_size_mb:.1f}" if local.file_size_mb is not None else "-"
                    print(f"{preset.name:<14} {family:<6} {local.total_steps:>6} {_duration(local.estimated_seconds):>9} "
                          f"{local.peak_vram_gb:>8.1f} {size:>8} {'yes' if local.fits_on_gpu else 'no':>5}  {cost}")

            base = next(p for p in presets if p.name == args.base)
            family = base.families[0]
            custom = {**base.config, "rank": 8, "alpha": 8, "resolution": 768, "gradient_checkpointing": True,
                      "max_steps": 1200}
            estimate = portal.estimate(config=custom, family=family, image_count=args.images, gpu=args.gpu)
            print(f"\ncustom config from {base.name}: " + json.dumps(
                {k: custom[k] for k in ("rank", "alpha", "resolution", "gradient_checkpointing", "max_steps")}))
            print(f"custom estimate: {estimate.total_steps} steps, {_duration(estimate.estimated_seconds)}, "
                  f"{estimate.peak_vram_gb:.1f} GB VRAM, fits on {args.gpu}: {'yes' if estimate.fits_on_gpu else 'no'}")
            for note in estimate.notes:
                print(f"  note: {note}")

            try:
                portal.estimate(config={**custom, "learning_rate": -1}, family=family, image_count=args.images)
            except ValidationError as exc:
                print(f"server refused a negative learning rate: field {exc.field}: {exc.message}")
        except LorasiteError as exc:
            where = f" [{exc.field}]" if exc.field else ""
            print(f"error{where}: {exc}", file=sys.stderr)
            return 2
    return 0


def _remote_cost(portal: Client, preset: str, family: str, images: int) -> str:
    """The paid-backend price when the portal has a Replicate backend for this family; '-' otherwise."""
    for backend in portal.backends():
        if backend.paid and family in backend.families:
            try:
                estimate = portal.estimate(preset=preset, family=family, image_count=images, backend=backend.name)
            except LorasiteError:
                return "-"
            if estimate.estimated_cost_usd is not None:
                return f"{estimate.estimated_cost_usd:.2f} ({backend.name})"
    return "-"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


if __name__ == "__main__":
    sys.exit(main())
