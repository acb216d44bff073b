"""A folder of images (with `name.txt` captions beside them) to a trained LoRA on disk.

    LORASITE_URL=http://127.0.0.1:8000 LORASITE_TOKEN=... python examples/basic_training.py shots/ \
        --base-model tiny-sd15 --preset fast --config '{"resolution": 64, "max_steps": 50}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lorasite_client import Client, LorasiteError, ProgressBar


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="images, each with an optional caption file of the same name")
    parser.add_argument("--name", help="dataset name (default: the folder's name)")
    parser.add_argument("--team", help="team slug (needed only when you belong to several)")
    parser.add_argument("--base-model", default="tiny-sd15")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--config", default="{}", help="JSON object of settings over the preset's")
    parser.add_argument("--out", help="file, or folder ending in /, for the LoRA (default: <name>.safetensors)")
    parser.add_argument("--layout", default="kohya", choices=["kohya", "diffusers"])
    args = parser.parse_args()
    name = args.name or args.folder.resolve().name

    with Client.from_env() as portal:
        try:
            dataset = portal.create_dataset(name, team=args.team)
            report = portal.upload_folder(dataset.id, args.folder, progress=ProgressBar("uploading"))
            print(f"dataset {dataset.id}: {len(report.added)} images added, {len(report.duplicates)} duplicates, "
                  f"{len(report.rejected)} rejected")
            for item in report.rejected:
                print(f"  rejected {item['name']}: {item['reason']}")
            config = json.loads(args.config)
            estimate = portal.estimate(preset=args.preset, config=config, dataset_id=dataset.id,
                                       base_model=args.base_model)
            print(f"estimate: {estimate.total_steps} steps, about {estimate.backend_estimated_seconds:.0f} s, "
                  f"{estimate.peak_vram_gb:.1f} GB VRAM on {estimate.gpu}")
            job = portal.submit_job(dataset.id, args.base_model, preset=args.preset, config=config)
            print(f"job {job.id} {job.status}")
            for message in portal.follow(job.id):
                if message.type == "progress":
                    loss = message.data.get("loss")
                    eta = message.data.get("eta_seconds")
                    print(f"step {message.step}/{message.data.get('total_steps')}"
                          + (f" loss {loss:.4f}" if loss is not None else "")
                          + (f" eta {eta:.0f}s" if eta is not None else ""), flush=True)
                elif message.type == "phase" and message.data.get("label"):
                    print(f"phase {message.data['label']}", flush=True)
                elif message.type in {"status", "snapshot"}:
                    print(f"status {message.status}" + (" (reconnected)" if message.resumed else ""), flush=True)
            job = portal.get_job(job.id)
            if job.status != "completed":
                print(f"job {job.status}: {job.error}", file=sys.stderr)
                return 1
            path = portal.download_weights(job.id, args.out or Path(f"{name}.safetensors"), layout=args.layout)
            print(f"saved {path} ({path.stat().st_size} bytes, final loss {job.loss})")
        except LorasiteError as exc:
            where = f" [{exc.field}]" if exc.field else ""
            print(f"error{where}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
