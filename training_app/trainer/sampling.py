"""Rendering preview images with the weights being trained.

A diffusers pipeline (``StableDiffusionPipeline`` or
``StableDiffusionXLPipeline``) is assembled around the in-memory modules, so
the LoRA adapters currently attached are exactly what renders. Sampling is
seeded, runs in eval mode (no LoRA dropout) and restores every global RNG
state afterwards, so asking for samples never changes the training run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .models import LoadedModel


def build_pipeline(model: LoadedModel, scheduler_config: dict[str, Any]) -> Any:
    """Pipeline over the live modules with a few-step-friendly DPM-Solver++ scheduler."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(scheduler_config)
    if model.is_sdxl:
        return StableDiffusionXLPipeline(
            vae=model.vae,
            text_encoder=model.text_encoders[0],
            text_encoder_2=model.text_encoders[1],
            tokenizer=model.tokenizers[0],
            tokenizer_2=model.tokenizers[1],
            unet=model.unet,
            scheduler=scheduler,
        )
    return StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoders[0],
        tokenizer=model.tokenizers[0],
        unet=model.unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def render_samples(
    model: LoadedModel,
    scheduler_config: dict[str, Any],
    prompts: list[str],
    out_dir: Path,
    step: int,
    *,
    seed: int,
    resolution: int,
    num_inference_steps: int,
    guidance_scale: float,
    device: str,
    autocast_dtype: Any = None,
    clip_skip: int = 1,
) -> list[Path]:
    """Render one image per prompt and save ``samples/step-00000010-0.png`` etc.; returns the paths.

    ``clip_skip`` is the training run's (A1111 counting), so samples see the text features training saw.
    """
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    modules = [model.unet, *model.text_encoders]
    was_training = [m.training for m in modules]
    py_state, cpu_state = random.getstate(), torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if str(device).startswith("cuda") else None
    paths: list[Path] = []
    try:
        for m in modules:
            m.eval()
        pipe = build_pipeline(model, scheduler_config)
        pipe.set_progress_bar_config(disable=True)
        for i, prompt in enumerate(prompts):
            generator = torch.Generator(device="cpu").manual_seed(seed + i)
            ctx = (
                torch.autocast(device_type=str(device).split(":")[0], dtype=autocast_dtype)
                if autocast_dtype is not None
                else torch.autocast(device_type="cpu", enabled=False)
            )
            with torch.no_grad(), ctx:
                image = pipe(
                    **_prompt_arguments(model, prompt, clip_skip, device),
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    height=resolution,
                    width=resolution,
                    generator=generator,
                ).images[0]
            path = out_dir / f"step-{step:08d}-{i}.png"
            tmp = path.with_suffix(".tmp.png")
            image.save(tmp, format="PNG")
            tmp.replace(path)
            paths.append(path)
    finally:
        for m, was in zip(modules, was_training, strict=True):
            m.train(was)
        random.setstate(py_state)
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    return paths


def _prompt_arguments(model: LoadedModel, prompt: str, clip_skip: int, device: str) -> dict[str, Any]:
    """The pipeline's prompt arguments for ``clip_skip``.

    diffusers counts skipped layers from its default (its ``clip_skip=1`` is our 2). SDXL takes that as is; the
    SD 1.5 pipeline's own clip skip calls ``text_encoder.text_model.final_layer_norm``, which transformers 5's
    CLIPTextModel no longer has, so SD 1.5 gets embeddings encoded by the trainer's own function instead.
    """
    if clip_skip == 1:
        return {"prompt": prompt}
    if model.is_sdxl:
        return {"prompt": prompt, "clip_skip": clip_skip - 1}
    from .models import encode_prompts

    positive, _ = encode_prompts(model, [prompt], device, clip_skip)
    negative, _ = encode_prompts(model, [""], device, clip_skip)
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative}
