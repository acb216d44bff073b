"""Demo content for embedded mode: the generated tiny base models, so a fresh install can train at once."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from training_app.models import BaseModel

TINY_MODELS = {"tiny-sd15": "sd15", "tiny-sdxl": "sdxl"}


def ensure_tiny_models(out=None) -> list[BaseModel]:
    """Build the tiny models under LORASITE_MODELS_DIR if missing and register them (idempotent)."""
    from training_app.trainer import build_tiny_model

    models = []
    for name, family in TINY_MODELS.items():
        folder = Path(settings.LORASITE_MODELS_DIR) / name
        built = not (folder / "model_index.json").is_file()
        if built:
            build_tiny_model(folder, family=family)
            if out is not None:
                out.write(f"built tiny {family} model in {name}/")
        model, _ = BaseModel.objects.update_or_create(
            name=name, defaults={"family": family, "location": name, "team": None, "enabled": True,
                                 "random_weights": True,
                                 "description": f"Tiny random-weight {family.upper()}-shaped model for demos and tests"},
        )
        if built or not model.weights_sha256:
            model.store_weights_sha256(folder)
        models.append(model)
    return models


def seed_demo(team, user, out) -> None:
    try:
        ensure_tiny_models(out)
    except ImportError:
        out.write("the training extra is not installed: no tiny base models (pip install -e '.[train]')")
        return
    out.write(f"base models: {', '.join(TINY_MODELS)} (backend: local)")
