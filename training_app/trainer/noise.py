"""Forward-diffusion maths: noising latents and building prediction targets.

Small pure functions on tensors, written out (rather than calling scheduler
methods) so that each step of the objective is documented and unit-tested in
isolation. They match ``DDPMScheduler.add_noise`` / ``get_velocity``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _gather(values: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    """``values[timesteps]`` reshaped to broadcast over a ``ndim``-dimensional batch."""
    out = values.to(device=timesteps.device)[timesteps].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def add_noise(
    latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """Sample x_t = sqrt(ᾱ_t)·x_0 + sqrt(1-ᾱ_t)·ε (DDPM forward process)."""
    a = _gather(alphas_cumprod, timesteps, latents.ndim)
    return (a.sqrt() * latents.float() + (1 - a).sqrt() * noise.float()).to(latents.dtype)


def epsilon_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Target for epsilon-prediction models: the noise itself (``latents`` unused, kept for symmetry)."""
    del latents
    return noise


def velocity_target(
    latents: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """Target for v-prediction models: v = sqrt(ᾱ_t)·ε - sqrt(1-ᾱ_t)·x_0 (Salimans & Ho 2022)."""
    a = _gather(alphas_cumprod, timesteps, latents.ndim)
    return (a.sqrt() * noise.float() - (1 - a).sqrt() * latents.float()).to(latents.dtype)


def prediction_target(
    prediction_type: str,
    latents: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """What the UNet should output for ``prediction_type`` ("epsilon" or "v_prediction")."""
    if prediction_type == "epsilon":
        return epsilon_target(latents, noise)
    if prediction_type == "v_prediction":
        return velocity_target(latents, noise, alphas_cumprod, timesteps)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def offset_noise(
    noise: torch.Tensor, noise_offset: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Add a per-sample, per-channel constant to the noise (Guttenberg's "offset noise").

    Plain Gaussian noise almost never shifts an image's mean brightness, so models
    trained on it struggle with very dark or bright images; a small constant
    offset (typically 0.05-0.1) lets the model learn to change the mean.
    Returns ``noise`` unchanged when ``noise_offset`` is 0.
    """
    import torch

    if noise_offset == 0:
        return noise
    shape = (noise.shape[0], noise.shape[1], *([1] * (noise.ndim - 2)))
    offset = torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")
    return noise + noise_offset * offset.to(device=noise.device, dtype=noise.dtype)
