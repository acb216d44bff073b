"""Cheap speed levers for the trainer, each against the unchanged trainer; prints ONE JSON object last.

Each lever is applied by patching the trainer for one run only (nothing here changes the library),
then ``--repetitions`` pairs of (trainer as is, trainer with the lever) run interleaved in this one
process, order alternating, threads pinned, warm-up and loading excluded, exactly as
``benchmarks/trainer_throughput.py`` measures (its ``run_ours`` does the timing). A lever's figure is
the median of its per-pair ratios (lever / as is; > 1 is faster), with min and max::

    .venv/bin/python benchmarks/trainer_levers.py [--repetitions 5 --steps 30 --threads 1]
    .venv/bin/python benchmarks/trainer_levers.py --levers fused_adamw,channels_last,fused_adamw+channels_last
    .venv/bin/python benchmarks/trainer_levers.py --adamw-step   # the optimizer step alone, SD 1.5 LoRA set

``--adamw-step`` times ``AdamW.step()`` alone over the LoRA tensors the trainer puts on the real SD 1.5
UNet (shapes from the meta-device model of ``trainer_flops.py``, rank ``--rank``), per-tensor loop vs
``foreach`` vs ``fused``, interleaved the same way: on the tiny model the optimizer is too small a share
of a step to see through a loaded machine's noise.

Levers: ``foreach_adamw`` / ``fused_adamw`` (torch.optim.AdamW's multi-tensor / fused update),
``zero_grad_keep`` (``zero_grad(set_to_none=False)``: the trainer sets to None), ``channels_last``
(UNet weights and inputs in NHWC), ``no_sdpa`` (diffusers' plain ``AttnProcessor`` instead of the
default SDPA ``AttnProcessor2_0``: tells whether SDPA pays). ``a+b`` applies several at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trainer_flops  # sibling scripts: the meta-device models, and the tiny-model timing of our train()
import trainer_throughput


@contextlib.contextmanager
def _adamw(**extra: Any) -> Iterator[None]:
    import torch

    real = torch.optim.AdamW

    def adamw(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, **extra})

    with mock.patch("torch.optim.AdamW", adamw):
        yield


@contextlib.contextmanager
def _zero_grad_keep() -> Iterator[None]:
    import torch

    real = torch.optim.Optimizer.zero_grad

    def zero_grad(self: Any, set_to_none: bool = True) -> None:
        real(self, set_to_none=False)

    with mock.patch.object(torch.optim.Optimizer, "zero_grad", zero_grad):
        yield


@contextlib.contextmanager
def _after_model_setup(change: Callable[[Any], None]) -> Iterator[None]:
    from training_app.trainer import loop

    real = loop._Run._setup_model

    def setup(self: Any) -> None:
        real(self)
        change(self.model.unet)

    with mock.patch.object(loop._Run, "_setup_model", setup):
        yield


def _channels_last(unet: Any) -> None:
    import torch

    unet.to(memory_format=torch.channels_last)
    real_forward = unet.forward

    def forward(sample: Any, *args: Any, **kwargs: Any) -> Any:
        return real_forward(sample.contiguous(memory_format=torch.channels_last), *args, **kwargs)

    unet.forward = forward


def _no_sdpa(unet: Any) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    unet.set_attn_processor(AttnProcessor())


def adamw_step_ab(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per AdamW step over the SD 1.5 LoRA tensors: loop vs foreach vs fused, interleaved."""
    import time

    import torch

    unet = trainer_flops.build_models(trainer_flops.CONFIGS / "sd15", unet_only=True)["unet"]
    trainer_flops.attach_trainer_lora(unet, args.rank, gradient_checkpointing=False)
    shapes = [tuple(p.shape) for p in unet.parameters() if p.requires_grad]
    variants = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}

    def make(**kind: Any) -> Any:
        gen = torch.Generator().manual_seed(args.seed)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8, **kind)

    optimizers = {name: make(**kind) for name, kind in variants.items()}
    for opt in optimizers.values():
        opt.step()  # warm-up: creates the state
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.repetitions):
        for name in list(variants) if rep % 2 == 0 else list(variants)[::-1]:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                optimizers[name].step()
            times[name].append((time.perf_counter() - t0) / args.steps)
    out: dict[str, Any] = {"lora_tensors": len(shapes), "lora_params_m": round(sum(
        torch.Size(s).numel() for s in shapes) / 1e6, 3)}
    for name, values in times.items():
        out[f"{name}_ms_per_step"] = round(statistics.median(values) * 1e3, 3)
    for name in ("foreach", "fused"):
        ratios = [a / b for a, b in zip(times["loop"], times[name], strict=True)]
        out[f"{name}_speedup_vs_loop"] = round(statistics.median(ratios), 3)
        out[f"{name}_speedup_min"] = round(min(ratios), 3)
        out[f"{name}_speedup_max"] = round(max(ratios), 3)
    return out


LEVERS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "foreach_adamw": lambda: _adamw(foreach=True),
    "fused_adamw": lambda: _adamw(fused=True),
    "zero_grad_keep": _zero_grad_keep,
    "channels_last": lambda: _after_model_setup(_channels_last),
    "no_sdpa": lambda: _after_model_setup(_no_sdpa),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levers", default=",".join(LEVERS))
    trainer_throughput.add_run_arguments(ap)
    ap.add_argument("--adamw-step", action="store_true", help="time the optimizer step alone (see above)")
    args = ap.parse_args()
    trainer_throughput.apply_quick(args)
    names = [n for n in args.levers.split(",") if n]
    unknown = {part for n in names for part in n.split("+")} - set(LEVERS)
    if unknown:
        ap.error(f"unknown levers: {', '.join(sorted(unknown))}")

    from training_app.trainer.tiny import build_tiny_model

    trainer_throughput.pin_threads(args.threads)
    out: dict[str, Any] = {}
    if args.adamw_step:
        out.update(adamw_step_ab(args))
        names = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", "sd15", seed=0)
        paths = trainer_throughput.draw_images(root / "images")
        for name in names:
            ratios, base_rates = [], []
            for rep in range(args.repetitions):
                rates = {}
                for which in (("base", "lever") if rep % 2 == 0 else ("lever", "base")):
                    with contextlib.ExitStack() as stack:
                        if which == "lever":
                            for part in name.split("+"):
                                stack.enter_context(LEVERS[part]())
                        run = trainer_throughput.run_ours(model, paths, root / f"{name}{rep}{which}", args)
                    rates[which] = run["steps_per_s"]
                ratios.append(rates["lever"] / rates["base"])
                base_rates.append(rates["base"])
            out[f"{name}_ratio"] = round(statistics.median(ratios), 3)
            out[f"{name}_ratio_min"] = round(min(ratios), 3)
            out[f"{name}_ratio_max"] = round(max(ratios), 3)
            out[f"{name}_base_steps_per_s"] = round(statistics.median(base_rates), 3)
    out.update({"threads": args.threads, "rank": args.rank, "resolution": args.resolution,
                "batch_size": args.batch_size, "repetitions": args.repetitions, "steps": args.steps,
                "load_avg": [round(x, 2) for x in os.getloadavg()]})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
