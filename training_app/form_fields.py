"""The new-training form's fields: labels and help text for every config key, grouped as kohya users
expect. Defaults come from TrainingConfig, so the form and the API never disagree."""

from __future__ import annotations

from training_app.config import OPTIMIZERS, RANKS, SCHEDULERS, TrainingConfig

F = dict
GROUPS: list[tuple[str, list[dict]]] = [
    ("Network", [
        F(key="rank", label="Rank (dim)", type="select", choices=RANKS,
          help="LoRA capacity. 8-16 for a character or object, 32-64 for a style; bigger files, slower."),
        F(key="alpha", label="Alpha", type="float", help="Scales the update by alpha/rank. Empty: equal to rank."),
        F(key="dropout", label="LoRA dropout", type="float", help="0 to 0.5; a little (0.05-0.1) can reduce overfitting."),
        F(key="train_text_encoder", label="Train the text encoder", type="bool",
          help="Helps new concepts bind to the trigger word; uses more memory."),
        F(key="text_encoder_lr", label="Text encoder learning rate", type="float",
          help="Empty: same as the learning rate. Usually half of it or less."),
    ]),
    ("Optimisation", [
        F(key="learning_rate", label="Learning rate", type="float", help="1e-4 is a safe start; 1e-3 with Prodigy set to 1."),
        F(key="optimizer", label="Optimizer", type="select", choices=OPTIMIZERS,
          help="AdamW is the default; AdamW 8-bit saves memory on CUDA; Prodigy tunes the rate itself; Lion is lean."),
        F(key="lr_scheduler", label="LR scheduler", type="select", choices=SCHEDULERS, help="How the rate changes over the run."),
        F(key="lr_warmup_steps", label="Warm-up steps", type="int", help="Steps of linear ramp-up at the start."),
        F(key="batch_size", label="Batch size", type="int", help="Images per step; raise it if memory allows."),
        F(key="gradient_accumulation_steps", label="Gradient accumulation", type="int",
          help="Steps whose gradients add up before one update: a bigger effective batch at the same memory."),
        F(key="epochs", label="Epochs", type="int", help="Passes over the dataset (with repeats)."),
        F(key="max_steps", label="Max steps", type="int", help="When set, wins over epochs."),
        F(key="mixed_precision", label="Mixed precision", type="select", choices=("no", "fp16", "bf16"),
          help="bf16 on Ampere or newer GPUs; fp16 on older ones; no on CPU."),
        F(key="gradient_checkpointing", label="Gradient checkpointing", type="bool",
          help="Much less memory for about 30% more time (SDXL on 24 GB needs it)."),
        F(key="seed", label="Seed", type="int", help="Same seed, same data, same device: the same LoRA."),
    ]),
    ("Data", [
        F(key="resolution", label="Resolution", type="int", help="Training size in pixels (512 for SD 1.5, 1024 for SDXL)."),
        F(key="bucketing", label="Aspect-ratio bucketing", type="bool", help="Keep each image's shape instead of square crops."),
        F(key="repeats", label="Repeats", type="int", help="Multiplies each image's own repeats (kohya folder numbers)."),
        F(key="trigger_word", label="Trigger word", type="text", help="The word that calls up your concept; defaults to the dataset's."),
        F(key="caption_dropout", label="Caption dropout", type="float", help="Chance of training an image with an empty caption."),
        F(key="shuffle_tags", label="Shuffle tags", type="bool", help="Shuffle comma-separated tags each step."),
        F(key="keep_tokens", label="Keep first tags", type="int", help="Tags at the start that never move (e.g. the trigger)."),
        F(key="noise_offset", label="Noise offset", type="float", help="0.05-0.1 lets the model learn very dark and bright images."),
        F(key="min_snr_gamma", label="Min-SNR γ", type="float", help="5 speeds up convergence; empty turns it off."),
    ]),
    ("Checkpoints and samples", [
        F(key="save_every_n_steps", label="Checkpoint every N steps", type="int",
          help="Resumable checkpoints; a crashed or restarted worker resumes from the last one. 0: only at the end."),
        F(key="sample_every_n_steps", label="Sample every N steps", type="int", help="0: no samples during training."),
        F(key="sample_prompts", label="Sample prompts", type="lines", help="One prompt per line (up to 8)."),
    ]),
]


def form_groups() -> list[tuple[str, list[dict]]]:
    defaults = TrainingConfig().model_dump()
    return [(title, [dict(field, default=defaults[field["key"]]) for field in fields]) for title, fields in GROUPS]
