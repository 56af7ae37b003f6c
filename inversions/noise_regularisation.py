"""Noise regularisation shared by pix2pix-zero's and ReNoise's inversions (both take it from pix2pix-zero's code):
losses that push a predicted noise map toward white Gaussian noise, and the gradient steps they take on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

SMALLEST_LEVEL = 8  # the auto-correlation pyramid stops at this side


class ShiftSource(Protocol):  # Python's `random` module or a random.Random: what pix2pix-zero's code draws from
    def randrange(self, stop: int) -> int: ...


def autocorrelation_loss(noise: torch.Tensor, generator: torch.Generator | ShiftSource | None = None) -> torch.Tensor:
    """noise (1, C, H, W): Σ over channels and levels of an average-pooled pyramid (down to 8×8) of
    mean(ε · roll(ε, r, axis))², both axes, r drawn uniformly from [0, side / 2) once per level: from a torch
    `generator` (None: torch's global one), or with `randrange` from Python's `random` (pix2pix-zero's code)."""
    loss = noise.new_zeros(())
    for channel in noise[0]:
        level = channel[None, None]
        while True:
            if hasattr(generator, "randrange"):
                shift = generator.randrange(level.shape[-1] // 2)
            else:
                shift = int(torch.randint(0, level.shape[-1] // 2, (1,), generator=generator))
            for axis in (2, 3):
                loss = loss + (level * torch.roll(level, shifts=shift, dims=axis)).mean() ** 2
            if level.shape[-1] <= SMALLEST_LEVEL:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return loss


def kl_to_standard_normal(noise: torch.Tensor) -> torch.Tensor:
    """pix2pix-zero's KL divergence of N(mean, var) of all elements from N(0, 1), up to a factor 2."""
    mean, variance = noise.mean(), noise.var()
    return variance + mean**2 - 1 - torch.log(variance + 1e-7)


def patch_kl(noise: torch.Tensor, reference: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """ReNoise's KL term between two noise maps (1, C, H, W), patch by patch: for every patch×patch window and
    channel, |log((var_r + ε)/(var + ε)) + (var + (μ − μ_r)²)/(var_r + ε) − 1| with ε = 1e-6 (the means and
    unbiased variances of the window's values), summed."""

    def windows(x: torch.Tensor) -> torch.Tensor:  # (windows, C, patch², with the channel axis kept)
        channels = x.shape[1]
        tiles = x[0].unfold(1, patch, patch).unfold(2, patch, patch)  # (C, H/p, W/p, p, p)
        return tiles.permute(1, 2, 0, 3, 4).reshape(-1, channels, patch * patch)

    x, r = windows(noise), windows(reference)
    epsilon = 1e-6
    mean, variance, mean_r, variance_r = x.mean(-1), x.var(-1), r.mean(-1), r.var(-1)
    kl = torch.log((variance_r + epsilon) / (variance + epsilon)) + (variance + (mean - mean_r) ** 2) / (
        variance_r + epsilon
    )
    return (kl - 1).abs().sum()


def gradient(loss: Callable[[torch.Tensor], torch.Tensor], at: torch.Tensor) -> torch.Tensor:
    """d loss / d at, at a detached copy (the regularisers step on the noise, never through the network)."""
    with torch.enable_grad():
        at = at.detach().requires_grad_(True)
        return torch.autograd.grad(loss(at), at)[0]
