"""Fixtures for the training tests: tiny models, a drawn dataset and spec builders for the trainer (no
Django, no DB: 64 px images, block widths 32/64, so the trainer suite stays well under a minute on
two CPU cores), and the loopback Replicate fake with the base models a Replicate backend trains.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from PIL import Image, ImageDraw

from tests.fakes.replicate_server import FakeReplicate
from training_app.trainer.config import DatasetItem, ModelSpec, TrainConfig, TrainSpec

# Shared by several test modules; small enough to train a few steps in ~0.1 s.
FAST = {"rank": 4, "resolution": 64, "learning_rate": 5e-3, "seed": 3}


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training_app.trainer.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "sd15", family="sd15", seed=0)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training_app.trainer.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "sdxl", family="sdxl", seed=0)


def draw_dataset(folder: Path, sizes: list[tuple[int, int]] | None = None) -> tuple[DatasetItem, ...]:
    """Four distinct drawn images (two aspect ratios so bucketing has work) with tag captions."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes or [(64, 64), (96, 64), (64, 64), (64, 96)]
    colours = [(220, 40, 40), (40, 180, 60), (40, 60, 220), (230, 210, 40)]
    shapes = ["circle", "square", "circle", "square"]
    items = []
    for i, ((w, h), colour) in enumerate(zip(sizes, colours, strict=False)):
        img = Image.new("RGB", (w, h), tuple(255 - c for c in colour))
        draw = ImageDraw.Draw(img)
        box = (w // 5, h // 5, 4 * w // 5, 4 * h // 5)
        if shapes[i] == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
        path = folder / f"img{i}.png"
        img.save(path)
        items.append(DatasetItem(path, f"{shapes[i]}, colour {i}, plain background, simple"))
    return tuple(items)


@pytest.fixture(scope="session")
def trainer_helpers() -> SimpleNamespace:
    """Helper functions for tests (a fixture, so test modules never import ``conftest`` by name)."""
    return SimpleNamespace(
        draw_dataset=draw_dataset,
        load_pipeline=load_pipeline,
        model_outputs=model_outputs,
        reference_pipeline=reference_pipeline,
    )


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetItem, ...]:
    return draw_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture
def make_spec(tiny_sd15: Path, dataset: tuple[DatasetItem, ...], tmp_path: Path) -> Callable[..., TrainSpec]:
    """Build a TrainSpec over the tiny SD 1.5 model; keyword args override config values."""

    def _make(
        out: Path | None = None,
        model: Path | None = None,
        family: str = "sd15",
        resume_from: Path | None = None,
        metadata: dict[str, str] | None = None,
        **config: Any,
    ) -> TrainSpec:
        cfg = TrainConfig.from_dict({**FAST, "max_steps": 4, **config})
        return TrainSpec(
            model=ModelSpec(model or tiny_sd15, family),
            items=dataset,
            config=cfg,
            output_dir=out or tmp_path / "out",
            device="cpu",
            resume_from=resume_from,
            metadata=metadata or {},
        )

    return _make


def reference_pipeline(base: Path, family: str, checkpoint_dir: Path) -> Any:
    """A fresh pipeline with the trainer's own LoRA modules loaded from a checkpoint (the "trained model")."""
    from training_app.trainer import checkpoint as ck
    from training_app.trainer.lora import attach_lora, components, load_trainable_state_dict

    data = ck.load_checkpoint(checkpoint_dir)
    cfg = TrainConfig.from_dict(data["meta"]["config"])
    pipe = load_pipeline(base, family)
    encoders = text_encoders(pipe)
    attach_lora(pipe.unet, encoders, cfg)
    load_trainable_state_dict(components(pipe.unet, encoders, cfg), data["trainable"])
    return pipe


def load_pipeline(base: Path, family: str) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(str(base), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_encoders(pipe: Any) -> list[Any]:
    return [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]


def model_outputs(pipe: Any) -> tuple[Any, list[Any]]:
    """UNet output on a fixed input and each text encoder's output on a fixed prompt (eval mode)."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 600])
    hidden = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=g)
    added = None
    if getattr(pipe, "text_encoder_2", None) is not None:
        added = {
            "text_embeds": torch.randn(2, 32, generator=g),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
        }
    ids = pipe.tokenizer(
        ["zzt, a red circle"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    encs = text_encoders(pipe)
    for m in [pipe.unet, *encs]:
        m.eval()
    with torch.no_grad():
        unet_out = pipe.unet(x, t, hidden, added_cond_kwargs=added).sample
        te_out = [e(ids)[0] for e in encs]
    return unet_out, te_out


# -- Replicate ---------------------------------------------------------------------------------------
REPLICATE_TOKEN_ENV = "REPLICATE_TEST_TOKEN"


@pytest.fixture
def fake_replicate():
    with FakeReplicate() as fake:
        yield fake


@pytest.fixture
def flux_model(db):
    from training_app.models import BaseModel, Family

    # A remote-only base model: its location is the trainer's model id, never a file here.
    return BaseModel.objects.create(name="flux-dev", family=Family.FLUX, location="black-forest-labs/FLUX.1-dev")


@pytest.fixture
def sdxl_model(db):
    from training_app.models import BaseModel, Family

    return BaseModel.objects.create(name="sdxl-base", family=Family.SDXL,
                                    location="stabilityai/stable-diffusion-xl-base-1.0")


def add_replicate(base_url: str, *options: str, name: str = "repl", team: str = "alpha",
                  token_env: str = REPLICATE_TOKEN_ENV, extra: tuple[str, ...] = ()) -> str:
    """Register a Replicate backend with `manage.py add_backend`, as an operator would."""
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("add_backend", name, "--team", team, "--type", "replicate", "--base-url", base_url,
                 "--token-env", token_env, "--option", "destination=acme/loras",
                 *[arg for option in options for arg in ("--option", option)], *extra, stdout=out)
    return out.getvalue().strip()


@pytest.fixture
def replicate_backend(fake_replicate, team_a, monkeypatch):
    """`repl`, a team backend on the fake, polled quickly; the token is in the environment by name."""
    monkeypatch.setenv(REPLICATE_TOKEN_ENV, fake_replicate.token)
    add_replicate(fake_replicate.base_url, "poll_seconds=0.05")
    return fake_replicate
