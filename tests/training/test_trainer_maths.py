"""Pure maths of the objective, checked against formulas and diffusers' own implementations."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr as diffusers_compute_snr

from training_app.trainer.losses import compute_snr, diffusion_loss, min_snr_weights
from training_app.trainer.noise import add_noise, offset_noise, prediction_target, velocity_target


@pytest.fixture(scope="module")
def sched() -> DDPMScheduler:
    return DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000
    )


def test_compute_snr_formula(sched: DDPMScheduler) -> None:
    t = torch.tensor([0, 10, 500, 999])
    a = sched.alphas_cumprod[t]
    expected = a / (1 - a)
    assert torch.allclose(compute_snr(sched.alphas_cumprod, t), expected)
    assert torch.allclose(compute_snr(sched.alphas_cumprod, t), diffusers_compute_snr(sched, t), rtol=1e-5)
    assert (compute_snr(sched.alphas_cumprod, torch.arange(1000)).diff() < 0).all()  # SNR falls with t


def test_min_snr_weights() -> None:
    snr = torch.tensor([0.5, 5.0, 50.0])
    gamma = 5.0
    eps = min_snr_weights(snr, gamma, "epsilon")
    assert torch.allclose(eps, torch.tensor([1.0, 1.0, 0.1]))
    v = min_snr_weights(snr, gamma, "v_prediction")
    assert torch.allclose(v, torch.tensor([0.5 / 1.5, 5.0 / 6.0, 5.0 / 51.0]))
    with pytest.raises(ValueError):
        min_snr_weights(snr, gamma, "sample")


def test_add_noise_and_velocity_match_scheduler(sched: DDPMScheduler) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=g)
    n = torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([1, 400, 999])
    assert torch.allclose(add_noise(x, n, sched.alphas_cumprod, t), sched.add_noise(x, n, t), atol=1e-6)
    assert torch.allclose(
        velocity_target(x, n, sched.alphas_cumprod, t), sched.get_velocity(x, n, t), atol=1e-6
    )
    assert prediction_target("epsilon", x, n, sched.alphas_cumprod, t) is n


def test_offset_noise_shifts_channel_means() -> None:
    n = torch.zeros(2, 4, 8, 8)
    assert offset_noise(n, 0.0) is n
    out = offset_noise(n, 0.1, torch.Generator().manual_seed(1))
    per_channel = out[:, :, 0, 0]
    assert torch.allclose(out, per_channel[:, :, None, None].expand_as(out))  # constant per (sample, channel)
    assert per_channel.abs().max() > 0 and per_channel.abs().max() < 1.0


def test_diffusion_loss_weighting() -> None:
    pred = torch.zeros(2, 1, 2, 2)
    target = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])
    assert diffusion_loss(pred, target).item() == pytest.approx(2.5)
    assert diffusion_loss(pred, target, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.5)
