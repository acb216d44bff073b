"""Our training config onto a Replicate trainer's inputs, the trainer's logs back into step and loss, and cost.

Two trainers are known: the Flux LoRA trainer (ostris/flux-dev-lora-trainer, the code of
replicate/flux-fine-tuner) and the SDXL one (stability-ai/sdxl, replicate/cog-sdxl). Each of our config
keys is either mapped onto an input, or checked: where the trainer cannot do what the config asks (a
warmup on the Flux trainer, an alpha other than the rank, min-SNR weighting, ...), the config is refused
with one problem per key, in the portal's `{"loc": ["config", key], "msg": ...}` shape. Keys that only
concern how our own trainer runs (seed on Flux, precision, checkpoint cadence) are ignored with a note
the job log can show, so nobody believes they took effect.

No Django: pure functions, importable by the backend, a view or a test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from training_app.backends.replicate_api import ReplicateError
from training_app.trainer.config import CONFIG_FIELDS

FLUX_STEPS = (3, 6000)
FLUX_RANKS = (1, 128)
FLUX_OPTIMIZERS = ("prodigy", "adam8bit", "adamw8bit", "lion8bit", "adam", "adamw", "lion", "adagrad", "adafactor")
SDXL_SCHEDULERS = ("constant", "linear")
# replicate.com/pricing, stored copy of unknown date: check it before relying on a figure.
PRICE_PER_SECOND = {"gpu-h100": 0.001525, "gpu-a100-large": 0.0014, "gpu-l40s": 0.000975, "gpu-t4": 0.000225,
                    "cpu": 0.0001}
_DEFAULTS = {spec.name: spec.default for spec in CONFIG_FIELDS}
_TQDM = re.compile(r"(\d{1,3})%\s*\|[^|]*\|\s*(\d+)\s*/\s*(\d+)")
_LOSS = re.compile(r"\bloss[:=]\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


class UnmappableConfig(ReplicateError):
    """The config asks for something the trainer cannot do; `problems` has one entry per key."""

    def __init__(self, problems: list[dict[str, Any]]):
        super().__init__("Replicate's trainer cannot run this config: "
                         + "; ".join(problem["msg"] for problem in problems),
                         field=problems[0]["loc"][-1] if problems else None)
        self.problems = problems


@dataclass(frozen=True)
class TrainerInputs:
    """What to send as `input`, what was ignored (for the job log), and how to zip the dataset."""

    inputs: dict[str, Any]
    notes: tuple[str, ...]
    caption_csv: bool  # the SDXL trainer reads captions from caption.csv, not .txt files


def total_steps(config: Mapping[str, Any], image_count: int | None) -> int | None:
    """max_steps, or images × repeats × epochs ÷ (batch × accumulation) rounded up, as the portal counts."""
    merged = {**_DEFAULTS, **config}
    if merged["max_steps"]:
        return int(merged["max_steps"])
    if not image_count:
        return None
    per_epoch = math.ceil(image_count * merged["repeats"] / merged["batch_size"])
    return max(1, math.ceil(per_epoch * merged["epochs"] / merged["gradient_accumulation_steps"]))


def _problem(key: str, msg: str) -> dict[str, Any]:
    return {"loc": ["config", key], "msg": msg}


def _common_problems(c: Mapping[str, Any], trainer: str) -> list[dict[str, Any]]:
    """What neither Replicate trainer can do."""
    problems = []
    if c["alpha"] is not None and float(c["alpha"]) != float(c["rank"]):
        problems.append(_problem("alpha", f"the {trainer} trainer always uses alpha = rank; leave alpha empty "
                                          f"or set it to {c['rank']}"))
    for key, off in (("dropout", 0), ("noise_offset", 0), ("gradient_accumulation_steps", 1),
                     ("sample_every_n_steps", 0)):
        if c[key] != off:
            problems.append(_problem(key, f"the {trainer} trainer on Replicate has no {key}; set it to {off}"))
    for key in ("shuffle_tags", "train_text_encoder"):
        if c[key]:
            problems.append(_problem(key, f"the {trainer} trainer on Replicate cannot {key.replace('_', ' ')}; "
                                          f"turn it off"))
    if c["min_snr_gamma"] is not None:
        problems.append(_problem("min_snr_gamma", f"the {trainer} trainer has no min-SNR weighting; leave it empty"))
    return problems


def _notes(c: Mapping[str, Any], keys: tuple[str, ...], trainer: str) -> list[str]:
    return [f"{key} = {c[key]!r} is not used by the {trainer} trainer on Replicate" for key in keys
            if c[key] != _DEFAULTS[key]]


def _flux(c: Mapping[str, Any], steps: int, trigger_word: str, has_captions: bool) -> tuple[dict, list, list]:
    problems = _common_problems(c, "Flux")
    if c["lr_scheduler"] != "constant":
        problems.append(_problem("lr_scheduler", "the Flux trainer on Replicate uses a constant learning rate"))
    if c["lr_warmup_steps"]:
        problems.append(_problem("lr_warmup_steps", "the Flux trainer on Replicate has no warmup; set it to 0"))
    if c["optimizer"] not in FLUX_OPTIMIZERS:
        problems.append(_problem("optimizer", f"the Flux trainer offers {', '.join(FLUX_OPTIMIZERS)}"))
    if not FLUX_RANKS[0] <= c["rank"] <= FLUX_RANKS[1]:
        problems.append(_problem("rank", "the Flux trainer takes a rank between 1 and 128"))
    if not FLUX_STEPS[0] <= steps <= FLUX_STEPS[1]:
        problems.append(_problem("max_steps", f"the Flux trainer runs {FLUX_STEPS[0]} to {FLUX_STEPS[1]} steps, "
                                              f"and this config makes {steps}"))
    inputs = {"trigger_word": trigger_word, "autocaption": not has_captions, "steps": steps,
              "learning_rate": float(c["learning_rate"]), "batch_size": int(c["batch_size"]),
              "resolution": str(c["resolution"]), "lora_rank": int(c["rank"]),
              "caption_dropout_rate": float(c["caption_dropout"]), "optimizer": c["optimizer"],
              "gradient_checkpointing": bool(c["gradient_checkpointing"]),
              "cache_latents_to_disk": bool(c["cache_to_disk"])}
    notes = _notes(c, ("seed", "bucketing", "mixed_precision", "save_every_n_steps", "text_encoder_lr",
                       "keep_tokens"), "Flux")
    if not has_captions:
        notes.append("images without a caption are captioned by the trainer (autocaption)")
    return inputs, problems, notes


def _sdxl(c: Mapping[str, Any], steps: int, trigger_word: str, has_captions: bool) -> tuple[dict, list, list]:
    problems = _common_problems(c, "SDXL")
    if c["lr_scheduler"] not in SDXL_SCHEDULERS:
        problems.append(_problem("lr_scheduler", "the SDXL trainer on Replicate offers constant or linear"))
    if c["optimizer"] != "adamw":
        problems.append(_problem("optimizer", "the SDXL trainer on Replicate always uses AdamW"))
    token = trigger_word or "TOK"
    inputs = {"token_string": token, "caption_prefix": f"a photo of {token}, ", "resolution": int(c["resolution"]),
              "train_batch_size": int(c["batch_size"]), "max_train_steps": steps,
              # enough epochs that max_train_steps is what ends the run
              "num_train_epochs": max(steps, 1), "is_lora": True, "lora_lr": float(c["learning_rate"]),
              "lora_rank": int(c["rank"]), "lr_scheduler": c["lr_scheduler"],
              "lr_warmup_steps": int(c["lr_warmup_steps"]), "seed": int(c["seed"]), "input_images_filetype": "zip"}
    notes = _notes(c, ("bucketing", "mixed_precision", "save_every_n_steps", "text_encoder_lr", "keep_tokens",
                       "caption_dropout", "gradient_checkpointing"), "SDXL")
    if not has_captions:
        notes.append("images are captioned by the trainer (BLIP), each prefixed with "
                     f"{inputs['caption_prefix']!r}")
    return inputs, problems, notes


def map_inputs(config: Mapping[str, Any], family: str, trigger_word: str, has_captions: bool, *,
               image_count: int | None = None, input_images: str | None = None) -> TrainerInputs:
    """The trainer inputs for this config and family; raises UnmappableConfig listing what cannot map.

    `has_captions` means every image has a caption (the trainer captions the rest itself).
    """
    unknown = sorted(set(config) - set(_DEFAULTS))
    if unknown:
        raise UnmappableConfig([_problem(key, f"unknown setting {key!r}") for key in unknown])
    merged = {**_DEFAULTS, **config}
    steps = total_steps(merged, image_count)
    if steps is None:
        raise UnmappableConfig([_problem("max_steps", "set max_steps (or give the image count) so the trainer "
                                                      "knows how many steps to run")])
    if family == "flux":
        inputs, problems, notes = _flux(merged, steps, trigger_word, has_captions)
    elif family == "sdxl":
        inputs, problems, notes = _sdxl(merged, steps, trigger_word, has_captions)
    else:
        raise UnmappableConfig([{"loc": ["base_model"], "msg": f"Replicate trains flux and sdxl LoRAs here, "
                                                               f"not {family}; use another backend"}])
    if problems:
        raise UnmappableConfig(problems)
    if input_images:
        inputs["input_images"] = input_images
    return TrainerInputs(inputs, tuple(notes), caption_csv=family == "sdxl" and has_captions)


def input_problems(config: Mapping[str, Any], family: str, *, image_count: int | None = None) -> list[dict[str, Any]]:
    """The same checks as map_inputs, as a list (empty when the config maps): for a backend's validate()."""
    try:
        map_inputs(config, family, "TOK", True, image_count=image_count)
    except UnmappableConfig as exc:
        return exc.problems
    return []


@dataclass(frozen=True)
class LogProgress:
    """What new log text says: the latest step and loss, every (step, loss) seen, the new complete lines."""

    step: int | None
    loss: float | None
    points: tuple[tuple[int, float | None], ...]
    lines: tuple[str, ...]
    cursor: int  # pass back next time: the offset after the last complete line read


def parse_progress(log_text: str, total_steps: int | None, cursor: int = 0, *, final: bool = False) -> LogProgress:
    """Read the lines of `log_text` after `cursor`; step and loss come from the training loop's tqdm bar.

    Replicate's `logs` only grows, so the cursor is an offset into it. A line counts once it ends
    (`\\n` or tqdm's `\\r`); pass `final=True` when the training is over to read the last, unended one.
    Bars whose total is not `total_steps` (latent caching, downloads) are not training steps.
    """
    text = log_text or ""
    start = min(max(cursor, 0), len(text))
    end = len(text) if final else max(text.rfind("\n", start), text.rfind("\r", start)) + 1
    if end <= start:
        return LogProgress(None, None, (), (), start)
    lines = tuple(line for line in re.split(r"\r\n|\r|\n", text[start:end]) if line.strip())
    points = []
    for line in lines:
        bar = _TQDM.search(line)
        if bar is None:
            continue
        step, total = int(bar.group(2)), int(bar.group(3))
        if total_steps is not None and total != total_steps:
            continue
        loss = _LOSS.search(line)
        value = float(loss.group(1)) if loss else None
        points.append((step, value if value is None or math.isfinite(value) else None))
    step = points[-1][0] if points else None
    loss = next((value for _, value in reversed(points) if value is not None), None)
    return LogProgress(step, loss, tuple(points), lines, end)


def tqdm_position(line: str) -> tuple[int, int] | None:
    """(n, total) when the line is a tqdm bar (the training loop's or any other), else None."""
    bar = _TQDM.search(line or "")
    return (int(bar.group(2)), int(bar.group(3))) if bar else None


def estimate_cost(steps: int, seconds_per_step: float, price_per_second: float, *, overhead_s: float = 0.0) -> float:
    """Dollars for a training: (steps × seconds per step + start-up overhead) × the hardware's price."""
    for name, value in (("steps", steps), ("seconds_per_step", seconds_per_step),
                        ("price_per_second", price_per_second), ("overhead_s", overhead_s)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, not {value!r}")
    return round((steps * seconds_per_step + overhead_s) * price_per_second, 4)


def actual_cost(predict_time: float | None, price_per_second: float) -> float | None:
    """Dollars Replicate bills for a finished training, from its `metrics.predict_time`."""
    if predict_time is None:
        return None
    return round(predict_time * price_per_second, 4)
