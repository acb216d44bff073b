"""Named starting points for a training config; a job's own values override the preset's."""

from __future__ import annotations

from typing import Any

from lorasite.errors import InvalidInput

PRESETS: dict[str, dict[str, Any]] = {
    "sd15": {
        "description": "Stable Diffusion 1.5 at 512², rank 16: a solid default for characters and styles.",
        "families": ["sd15"],
        "config": {"rank": 16, "alpha": 16, "resolution": 512, "learning_rate": 1e-4, "text_encoder_lr": 5e-5,
                   "optimizer": "adamw", "lr_scheduler": "cosine", "lr_warmup_steps": 50, "batch_size": 2,
                   "epochs": 10, "mixed_precision": "bf16", "noise_offset": 0.05, "min_snr_gamma": 5.0,
                   "save_every_n_steps": 500},
    },
    "sdxl": {
        "description": "SDXL at 1024², rank 32, gradient checkpointing to fit 24 GB cards.",
        "families": ["sdxl"],
        "config": {"rank": 32, "alpha": 16, "resolution": 1024, "learning_rate": 1e-4, "optimizer": "adamw",
                   "lr_scheduler": "cosine", "lr_warmup_steps": 100, "batch_size": 1, "epochs": 10,
                   "mixed_precision": "bf16", "gradient_checkpointing": True, "min_snr_gamma": 5.0,
                   "save_every_n_steps": 500},
    },
    "fast": {
        "description": "Rank 8, few epochs, higher learning rate: a quick look at whether the data works.",
        "families": ["sd15", "sdxl"],
        "config": {"rank": 8, "alpha": 8, "learning_rate": 3e-4, "lr_scheduler": "constant", "epochs": 3,
                   "batch_size": 2, "save_every_n_steps": 0},
    },
    "high_quality": {
        "description": "Rank 64, more epochs, min-SNR weighting and a gentle cosine schedule.",
        "families": ["sd15", "sdxl"],
        "config": {"rank": 64, "alpha": 32, "learning_rate": 5e-5, "text_encoder_lr": 2e-5,
                   "lr_scheduler": "cosine_with_restarts", "lr_warmup_steps": 200, "epochs": 20,
                   "min_snr_gamma": 5.0, "noise_offset": 0.05, "save_every_n_steps": 500},
    },
    "style": {
        "description": "LoCon at rank 32 (convolutions at 16) on attention and feed-forward: the usual choice for "
                       "art styles, which live in textures as much as in composition.",
        "families": ["sd15", "sdxl"],
        "config": {"network": "locon", "target_layers": "attention_mlp", "rank": 32, "alpha": 16, "conv_rank": 16,
                   "conv_alpha": 8, "learning_rate": 1e-4, "text_encoder_lr": 5e-5, "lr_scheduler": "cosine",
                   "lr_warmup_steps": 100, "epochs": 12, "min_snr_gamma": 5.0, "noise_offset": 0.05,
                   "save_every_n_steps": 500},
    },
    "flux": {
        "description": "Flux.1-dev LoRA at 1024², rank 16, for remote backends (ComfyUI, Replicate).",
        "families": ["flux"],
        "config": {"rank": 16, "alpha": 16, "resolution": 1024, "learning_rate": 4e-4, "optimizer": "adamw",
                   "lr_scheduler": "constant", "batch_size": 1, "max_steps": 1000, "mixed_precision": "bf16",
                   "gradient_checkpointing": True},
    },
}


def preset_values(name: str | None) -> dict[str, Any]:
    if not name:
        return {}
    if name not in PRESETS:
        raise InvalidInput(f"Unknown preset {name!r}; presets are {', '.join(PRESETS)}.",
                           [{"loc": ["preset"], "msg": f"must be one of {', '.join(PRESETS)}"}])
    return dict(PRESETS[name]["config"])


# Sizes each family is usually trained at (the form suggests them beside the dataset's own).
FAMILY_RESOLUTIONS = {"sd15": [512, 768], "sdxl": [1024, 768, 896], "flux": [1024, 512, 768]}
