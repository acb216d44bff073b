"""Loss weighting for diffusion training: signal-to-noise ratio and min-SNR-γ.

Pure functions matching ``diffusers.training_utils.compute_snr`` and the
min-SNR weighting used by diffusers' example scripts (Hang et al. 2023,
"Efficient Diffusion Training via Min-SNR Weighting Strategy").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def compute_snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """SNR(t) = ᾱ_t / (1 - ᾱ_t) for each timestep: the signal-to-noise ratio of x_t."""
    a = alphas_cumprod.to(device=timesteps.device, dtype=alphas_cumprod.dtype)[timesteps].float()
    return a / (1.0 - a)


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample loss weights for min-SNR-γ.

    The ideal weight on the x_0 error is min(SNR, γ). The network predicts ε or
    v instead, whose squared errors relate to the x_0 error by a factor SNR
    (ε) or SNR+1 (v), so the weight on *our* MSE is min(SNR, γ)/SNR for
    epsilon and min(SNR, γ)/(SNR+1) for v-prediction. This caps the weight of
    the easy, low-noise timesteps that otherwise dominate the gradient.
    """
    import torch

    clipped = torch.minimum(snr, torch.full_like(snr, float(gamma)))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def diffusion_loss(
    prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error in fp32, optionally weighted per sample before averaging."""
    import torch.nn.functional as F

    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none")
    per_sample = per_sample.mean(dim=list(range(1, per_sample.ndim)))
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample.device)
    return per_sample.mean()
