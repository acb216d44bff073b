"""What the Replicate fake knows about the two trainers it hosts: input schemas, log lines, output tars.

The schemas follow the trainers' own `train.py` (replicate/flux-fine-tuner for
ostris/flux-dev-lora-trainer, replicate/cog-sdxl for stability-ai/sdxl); the log lines follow what they
print (tqdm bars; the Flux one carries `lr: … loss: …` in its postfix); the weights are a real `.tar`
holding a real, small `lora.safetensors` laid out where each trainer puts it. Written from those
facts, not copied.
"""

from __future__ import annotations

import io
import json
import math
import random
import struct
import sys
import tarfile
from array import array
from dataclasses import dataclass, field
from typing import Any

FLUX_OPTIMIZERS = ("prodigy", "adam8bit", "adamw8bit", "lion8bit", "adam", "adamw", "lion", "adagrad", "adafactor")


@dataclass(frozen=True)
class InputSpec:
    """One trainer input as its cog schema declares it."""

    type: str  # integer | number | string | boolean | uri
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    required: bool = False


@dataclass(frozen=True)
class Trainer:
    """A trainer model on the fake: owner/name, one version id, its inputs, how it logs and packs."""

    owner: str
    name: str
    version: str
    inputs: dict[str, InputSpec]
    steps_input: str  # the input that holds the number of steps
    rank_input: str
    job_prefix: str  # what the tqdm bar of the training loop starts with
    logs_loss: bool  # whether the bar's postfix carries the loss
    tar_lora_path: str  # where lora.safetensors sits inside the output tar
    extra_members: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.name}:{self.version}"

    def openapi_schema(self) -> dict[str, Any]:
        """A cog-style OpenAPI fragment; the official client only needs it to be an object."""
        properties = {}
        for index, (name, spec) in enumerate(self.inputs.items()):
            prop: dict[str, Any] = {"type": "string" if spec.type == "uri" else spec.type, "x-order": index}
            if spec.type == "uri":
                prop["format"] = "uri"
            if spec.default is not None:
                prop["default"] = spec.default
            if spec.minimum is not None:
                prop["minimum"] = spec.minimum
            if spec.maximum is not None:
                prop["maximum"] = spec.maximum
            if spec.choices:
                prop["enum"] = list(spec.choices)
            properties[name] = prop
        required = [name for name, spec in self.inputs.items() if spec.required]
        return {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"},
                "components": {"schemas": {"TrainingInput": {"type": "object", "title": "TrainingInput",
                                                             "properties": properties, "required": required}}}}


FLUX_TRAINER = Trainer(
    owner="ostris", name="flux-dev-lora-trainer",
    version="26dce37af90b9d997eeb970d92e47de3064d46c300504ae376c75bef6a9022d2",
    inputs={
        "input_images": InputSpec("uri", required=True),
        "trigger_word": InputSpec("string", "TOK"),
        "autocaption": InputSpec("boolean", True),
        "autocaption_prefix": InputSpec("string"),
        "autocaption_suffix": InputSpec("string"),
        "steps": InputSpec("integer", 1000, minimum=3, maximum=6000),
        "learning_rate": InputSpec("number", 4e-4),
        "batch_size": InputSpec("integer", 1),
        "resolution": InputSpec("string", "512,768,1024"),
        "lora_rank": InputSpec("integer", 16, minimum=1, maximum=128),
        "caption_dropout_rate": InputSpec("number", 0.05, minimum=0, maximum=1),
        "optimizer": InputSpec("string", "adamw8bit", choices=FLUX_OPTIMIZERS),
        "cache_latents_to_disk": InputSpec("boolean", False),
        "layers_to_optimize_regex": InputSpec("string"),
        "gradient_checkpointing": InputSpec("boolean", False),
        "hf_repo_id": InputSpec("string"),
        "hf_token": InputSpec("string"),
    },
    steps_input="steps", rank_input="lora_rank", job_prefix="flux_train_replicate", logs_loss=True,
    tar_lora_path="output/flux_train_replicate/lora.safetensors",
    extra_members=("output/flux_train_replicate/config.yaml",),
)

SDXL_TRAINER = Trainer(
    owner="stability-ai", name="sdxl",
    version="39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
    inputs={
        "input_images": InputSpec("uri", required=True),
        "seed": InputSpec("integer"),
        "resolution": InputSpec("integer", 768),
        "train_batch_size": InputSpec("integer", 4),
        "num_train_epochs": InputSpec("integer", 4000),
        "max_train_steps": InputSpec("integer", 1000),
        "is_lora": InputSpec("boolean", True),
        "unet_learning_rate": InputSpec("number", 1e-6),
        "ti_lr": InputSpec("number", 3e-4),
        "lora_lr": InputSpec("number", 1e-4),
        "lora_rank": InputSpec("integer", 32),
        "lr_scheduler": InputSpec("string", "constant", choices=("constant", "linear")),
        "lr_warmup_steps": InputSpec("integer", 100),
        "token_string": InputSpec("string", "TOK"),
        "caption_prefix": InputSpec("string", "a photo of TOK, "),
        "mask_target_prompts": InputSpec("string"),
        "crop_based_on_salience": InputSpec("boolean", True),
        "use_face_detection_instead": InputSpec("boolean", False),
        "clipseg_temperature": InputSpec("number", 1.0),
        "verbose": InputSpec("boolean", True),
        "checkpointing_steps": InputSpec("integer", 999999),
        "input_images_filetype": InputSpec("string", "infer", choices=("zip", "tar", "infer")),
    },
    steps_input="max_train_steps", rank_input="lora_rank", job_prefix="", logs_loss=False,
    tar_lora_path="lora.safetensors", extra_members=("embeddings.pti", "special_params.json"),
)

TRAINERS = (FLUX_TRAINER, SDXL_TRAINER)

_JSON_TYPES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean", "uri": "string"}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def _type_ok(spec: InputSpec, value: Any) -> bool:
    kind = _type_name(value)
    if spec.type == "number":
        return kind in ("integer", "number")
    return kind == _JSON_TYPES[spec.type]


def validate_input(trainer: Trainer, given: Any) -> list[dict[str, str]]:
    """Replicate's `invalid_fields` entries for this input: wrong types, ranges, choices, unknown keys."""
    if not isinstance(given, dict):
        return [{"type": "invalid_type", "field": "input", "description": "Invalid type. Expected: object"}]
    problems = []
    for name in given:
        if name not in trainer.inputs:
            problems.append({"type": "additional_property_not_allowed", "field": "input",
                             "description": f"Additional property {name} is not allowed"})
    for name, spec in trainer.inputs.items():
        field_name = f"input.{name}"
        if name not in given:
            if spec.required:
                problems.append({"type": "required", "field": "input",
                                 "description": f"{name} is required"})
            continue
        value = given[name]
        if not _type_ok(spec, value):
            problems.append({"type": "invalid_type", "field": field_name,
                             "description": f"Invalid type. Expected: {_JSON_TYPES[spec.type]}, "
                                            f"given: {_type_name(value)}"})
            continue
        if spec.minimum is not None and value < spec.minimum:
            problems.append({"type": "number_gte", "field": field_name,
                             "description": f"Must be greater than or equal to {spec.minimum:g}"})
        if spec.maximum is not None and value > spec.maximum:
            problems.append({"type": "number_lte", "field": field_name,
                             "description": f"Must be less than or equal to {spec.maximum:g}"})
        if spec.choices and value not in spec.choices:
            choices = ", ".join(f'"{choice}"' for choice in spec.choices)
            problems.append({"type": "enum", "field": field_name,
                             "description": f"{field_name} must be one of the following: {choices}"})
    if trainer is FLUX_TRAINER and isinstance(given.get("resolution"), str):
        parts = given["resolution"].split(",")
        if not all(part.strip().isdigit() for part in parts):
            problems.append({"type": "invalid_value", "field": "input.resolution",
                             "description": "Must be comma-separated whole numbers like 512,768,1024"})
    return problems


def effective_input(trainer: Trainer, given: dict[str, Any]) -> dict[str, Any]:
    """The input with the schema's defaults filled in, as the trainer sees it."""
    values = {name: spec.default for name, spec in trainer.inputs.items() if spec.default is not None}
    values.update(given)
    return values


def loss_at(step: int, total: int) -> float:
    """A plausible, deterministic, falling loss curve."""
    return 0.08 + 0.35 * math.exp(-3.0 * step / max(total, 1)) + 0.01 * math.sin(step)


def _bar(step: int, total: int) -> str:
    filled = 10 * step // max(total, 1)
    return "█" * filled + " " * (10 - filled)


def progress_line(trainer: Trainer, step: int, total: int, seconds_per_step: float, lr: float) -> str:
    """One tqdm line of the training loop, as the trainer prints it."""
    percent = 100 * step // max(total, 1)
    elapsed = _clock(step * seconds_per_step)
    remaining = _clock((total - step) * seconds_per_step)
    head = f"{trainer.job_prefix}: " if trainer.job_prefix else ""
    postfix = f", lr: {lr:.1e} loss: {loss_at(step, total):.3e}" if trainer.logs_loss else ""
    return (f"{head}{percent:3d}%|{_bar(step, total)}| {step}/{total} "
            f"[{elapsed}<{remaining}, {max(seconds_per_step, 0.01):.2f}s/it{postfix}]")


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def preamble_lines(trainer: Trainer, image_count: int) -> list[str]:
    """What the trainer prints before its training loop (including a tqdm bar that is not the loop's)."""
    if trainer is FLUX_TRAINER:
        return [f"Extracted {image_count} files from zip to input_images",
                "Starting train job", "Running 1 process", "Loading Flux model",
                f"Caching latents to memory: 100%|██████████| {image_count}/{image_count} [00:01<00:00, 9.87it/s]"]
    return ["Using provided captions" if image_count else "Generating captions...",
            f"Num examples = {image_count}", "***** Running training *****"]


def failure_lines(error: str) -> list[str]:
    return ["Traceback (most recent call last):", '  File "/src/train.py", line 381, in train',
            "    job.run()", f"RuntimeError: {error}"]


@dataclass
class SafetensorsBuilder:
    """A small, valid safetensors file written without torch or numpy."""

    tensors: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, shape: list[int], rng: random.Random) -> None:
        count = math.prod(shape)
        self.tensors[name] = (shape, [rng.uniform(-0.05, 0.05) for _ in range(count)])

    def to_bytes(self) -> bytes:
        header: dict[str, Any] = {"__metadata__": self.metadata} if self.metadata else {}
        data = bytearray()
        for name, (shape, values) in sorted(self.tensors.items()):
            raw = array("f", values)
            if sys.byteorder != "little":
                raw.byteswap()
            start = len(data)
            data += raw.tobytes()
            header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [start, len(data)]}
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
        return struct.pack("<Q", len(encoded)) + encoded + bytes(data)


def lora_file(trainer: Trainer, rank: int, seed: str) -> bytes:
    """A LoRA shaped like each trainer's (tiny inner width): Flux transformer keys or SDXL unet processor keys."""
    rng = random.Random(seed)
    builder = SafetensorsBuilder(metadata={"format": "pt", "rank": str(rank)})
    width = 64
    if trainer is FLUX_TRAINER:
        for block in range(2):
            for proj in ("to_q", "to_k", "to_v"):
                prefix = f"transformer.single_transformer_blocks.{block}.attn.{proj}"
                builder.add(f"{prefix}.lora_A.weight", [rank, width], rng)
                builder.add(f"{prefix}.lora_B.weight", [width, rank], rng)
    else:
        for proj in ("to_q", "to_k", "to_v", "to_out"):
            prefix = f"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.{proj}_lora"
            builder.add(f"{prefix}.down.weight", [rank, width], rng)
            builder.add(f"{prefix}.up.weight", [width, rank], rng)
    return builder.to_bytes()


def weights_tar(trainer: Trainer, rank: int, seed: str, captions: dict[str, str]) -> bytes:
    """The `output.weights` archive: the LoRA where the trainer writes it, plus the files it adds."""
    members: dict[str, bytes] = {trainer.tar_lora_path: lora_file(trainer, rank, seed)}
    for name in trainer.extra_members:
        if name.endswith("config.yaml"):
            members[name] = f"job: custom_job\nconfig:\n  name: flux_train_replicate\n  rank: {rank}\n".encode()
        elif name.endswith(".pti"):
            builder = SafetensorsBuilder()
            builder.add("text_encoders_0", [2, 8], random.Random(seed))
            members[name] = builder.to_bytes()
        else:
            members[name] = json.dumps({"TOK": "<s0><s1>"}).encode()
    if trainer is FLUX_TRAINER:
        for stem, caption in captions.items():
            members[f"output/flux_train_replicate/captions/{stem}.txt"] = caption.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()
