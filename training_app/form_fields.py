"""The new-training form's fields, grouped as kohya users expect. Only the grouping and the labels live
here; help text, choices and nullability come from the trainer's table and defaults from TrainingConfig,
so the form and the API never disagree."""

from __future__ import annotations

from training_app.config import TrainingConfig
from training_app.trainer.config import CONFIG_FIELDS, FieldSpec

GROUPS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Network", [
        ("network", "Network type"),
        ("dora", "DoRA (weight decomposition)"),
        ("target_layers", "Target modules"),
        ("rank", "Rank (dim)"),
        ("alpha", "Alpha"),
        ("conv_rank", "Conv rank (conv_dim)"),
        ("conv_alpha", "Conv alpha"),
        ("factor", "LoKr factor"),
        ("dropout", "Dropout"),
        ("train_text_encoder", "Train the text encoder"),
        ("text_encoder_lr", "Text encoder learning rate"),
        ("clip_skip", "Clip skip"),
    ]),
    ("Optimisation", [
        ("learning_rate", "Learning rate"),
        ("optimizer", "Optimizer"),
        ("lr_scheduler", "LR scheduler"),
        ("lr_warmup_steps", "Warm-up steps"),
        ("batch_size", "Batch size"),
        ("gradient_accumulation_steps", "Gradient accumulation"),
        ("epochs", "Epochs"),
        ("max_steps", "Max steps"),
        ("mixed_precision", "Mixed precision"),
        ("gradient_checkpointing", "Gradient checkpointing"),
        ("seed", "Seed"),
    ]),
    ("Data", [
        ("resolution", "Resolution"),
        ("bucketing", "Aspect-ratio bucketing"),
        ("repeats", "Repeats"),
        ("trigger_word", "Trigger word"),
        ("caption_dropout", "Caption dropout"),
        ("shuffle_tags", "Shuffle tags"),
        ("keep_tokens", "Keep first tags"),
        ("noise_offset", "Noise offset"),
        ("min_snr_gamma", "Min-SNR γ"),
    ]),
    ("Checkpoints and samples", [
        ("save_every_n_steps", "Checkpoint every N steps"),
        ("sample_every_n_steps", "Sample every N steps"),
        ("sample_prompts", "Sample prompts"),
        ("log_every_n_steps", "Log a step line every N steps"),
    ]),
]

# How the page reads an input's text back into a value (static/training/new.js).
VALUE_TYPES = {int: "int", float: "float", bool: "bool", str: "text"}


def _form_field(spec: FieldSpec, label: str, default: object) -> dict:
    value_type = VALUE_TYPES.get(spec.value_type, "lines")  # the one tuple key, sample_prompts: one per line
    widget = "select" if spec.choices else value_type
    return {"key": spec.name, "label": label, "type": widget, "value_type": value_type, "choices": spec.choices,
            "help": spec.help, "nullable": spec.nullable, "default": default}


def form_groups() -> list[tuple[str, list[dict]]]:
    specs = {spec.name: spec for spec in CONFIG_FIELDS if spec.exposed}
    defaults = TrainingConfig().model_dump()
    return [(title, [_form_field(specs[key], label, defaults[key]) for key, label in fields])
            for title, fields in GROUPS]
