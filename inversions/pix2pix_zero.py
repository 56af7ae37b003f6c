"""pix2pix-zero's inversion (Parmar et al., "Zero-shot Image-to-Image Translation", SIGGRAPH 2023, §3.1 "Inverting
real images"), as the PIE-Bench reference runs it: run_editing_pix2pix_zero.py with models/pix2pix_zero/ddim_inv.py
and scheduler.py (cure-lab/PnPInversion 07f97f4; DDIMInversion at guidance 1, λ_ac = λ_kl = 20, 5 regularisation
rounds, 5 auto-correlation rolls; pie-bench-protocol.md §3.5).

Contract: DDIM inversion with the source prompt at guidance 1 in which every step's predicted noise is first pushed
toward white Gaussian noise, then taken by the inverse step. Regularisation: `reg_steps` rounds of `ac_rolls`
gradient steps of size λ_ac / ac_rolls on the auto-correlation loss (per channel and per level of an average-pooled
pyramid down to 8×8, the squared mean of ε · roll(ε, r) along each axis, r drawn with Python's `random.randrange`
from [0, side / 2), as the reference), followed by one step of size λ_kl on the KL divergence of ε's mean and
variance from N(0, 1), σ² + μ² − 1 − log σ². Regularised noise no longer retraces the image exactly: the method
trades reconstruction for a z_T that looks like a sample of the prior, which its editor needs. While editing, the
source prompt is the unconditional embedding of every branch: the reference's negative prompt is its BLIP caption,
and with no captioner offline the caption is the source prompt (editors/pix2pix_zero.py). The runner seeds Python's,
NumPy's and torch's generators per sample, as the reference's setup_seed.
Reference details kept as they are (the defaults):
- `image_latent: posterior_sample`: z_0 is a sample of the VAE posterior from torch's global generator (the
  reference's `latent_dist.sample()`), not its mean;
- `inverse_grid: reference`: the reference's DDIMInverseScheduler indexes ᾱ one training step early and ends on the
  last training step: at UNet timestep t (1, 1 + Δ, …) it moves from ᾱ[t − 1] to ᾱ[t − 1 + Δ], and the last step to
  ᾱ[T − 1] (T = 1000), so z_T sits at ᾱ[999] while the editor starts denoising it at ᾱ[981] (50 steps). Every step of
  the grid is inverted (PnPInversion patched the original's 48-step loop). It needs the reference's steps_offset 1.
`pix2pix_zero_aligned` (ours) inverts the posterior mean on the editor's own DDIM grid (`inverse_grid: ddim`), as
every other inversion here does. UNet evaluations: 1 per step; the regularisation differentiates only its losses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from invbench.ddim import DDIMSchedule
from invbench.errors import ConfigError
from invbench.hyperparameters import Count, NonNegative, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult, UnconditionalEmbeddings
from inversions.noise_regularisation import autocorrelation_loss, gradient, kl_to_standard_normal
from pie_bench import Sample


@INVERSIONS.register("pix2pix_zero")
@dataclass
class Pix2PixZeroInversion(Inversion):
    families = EPSILON_UNETS
    produces = frozenset({"conditioning"})

    num_steps: Steps
    lambda_ac: NonNegative
    lambda_kl: NonNegative
    reg_steps: Count
    ac_rolls: Steps
    image_latent: Literal["posterior_sample", "posterior_mean"]
    inverse_grid: Literal["reference", "ddim"]

    def encode_source(self, model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
        if self.image_latent == "posterior_mean":
            return model.encode_image(image)
        return model.encode_image(image, generator=torch.default_generator)  # the reference's global-RNG sample

    def regularise(self, noise: torch.Tensor) -> torch.Tensor:
        for _ in range(self.reg_steps):
            if self.lambda_ac > 0:
                for _ in range(self.ac_rolls):
                    step = gradient(lambda x: autocorrelation_loss(x, random), noise)
                    noise = noise - self.lambda_ac * (step / self.ac_rolls)
            if self.lambda_kl > 0:
                noise = noise - self.lambda_kl * gradient(kl_to_standard_normal, noise)
        return noise

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = model.schedule(self.num_steps)
        inverse_step = schedule.inverse_step if self.inverse_grid == "ddim" else _reference_inverse_step(schedule)
        source = model.encode_prompts([sample.source_prompt])
        latents = [image_latent]
        for t in reversed(schedule.timesteps):
            noise = self.regularise(model.predict_noise(latents[-1], t, source))
            latents.append(inverse_step(noise, t, latents[-1]))
        return InversionResult(
            schedule=schedule, latents=latents, hooks=UnconditionalEmbeddings([source] * self.num_steps)
        )


def _reference_inverse_step(schedule: DDIMSchedule):
    """The reference DDIMInverseScheduler.step(reverse=True): from ᾱ[t − 1] to ᾱ[t − 1 + Δ], or to the last
    training step's ᾱ when t + Δ passes the number of training steps (see the module docstring)."""
    if min(schedule.timesteps, default=1) < 1:
        raise ConfigError(
            f"inversion=pix2pix_zero with inverse_grid=reference needs timesteps from 1 (scheduler.steps_offset=1, "
            f"the reference's), not {min(schedule.timesteps)}: set scheduler.steps_offset=1 or "
            "inversion.inverse_grid=ddim"
        )
    last = schedule.num_train_timesteps - 1

    def inverse_step(noise: torch.Tensor, t: int, latent: torch.Tensor) -> torch.Tensor:
        alpha_from = schedule.alpha_cumprod(t - 1).to(latent)
        following = t + schedule.step_size
        alpha_to = schedule.alpha_cumprod(following - 1 if following <= last + 1 else last).to(latent)
        predicted_x0 = (latent - (1 - alpha_from) ** 0.5 * noise) / alpha_from.sqrt()
        return alpha_to.sqrt() * predicted_x0 + (1 - alpha_to).sqrt() * noise

    return inverse_step
