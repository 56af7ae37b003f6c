"""pix2pix-zero's inversion (Parmar et al., "Zero-shot Image-to-Image Translation", SIGGRAPH 2023, §3.1 "Inverting
real images"), as the PIE-Bench reference runs it (DDIMInversion with guidance 1, λ_ac = λ_kl = 20, 5 regularisation
steps, 5 auto-correlation rolls; pie-bench-protocol.md §3.5).

Contract: DDIM inversion with the source prompt at guidance 1 in which every step's predicted noise is first pushed
toward white Gaussian noise, then taken by the inverse step. Regularisation: `reg_steps` rounds of `ac_rolls`
gradient steps of size λ_ac / ac_rolls on the auto-correlation loss (per channel and per level of an average-pooled
pyramid down to 8×8, the squared mean of ε · roll(ε, r) along each axis, r drawn uniformly from [0, side / 2)),
followed by one step of size λ_kl on the KL divergence of ε's mean and variance from N(0, 1),
σ² + μ² − 1 − log σ². Regularised noise no longer retraces the image exactly: the method trades reconstruction for
a z_T that looks like a sample of the prior, which its editor needs. While editing, the source prompt is the
unconditional embedding of every branch: the reference's negative prompt is its BLIP caption, and with no captioner
offline the caption is the source prompt (editors/pix2pix_zero.py). Shifts come from the global RNG, which the
runner seeds per sample. UNet evaluations: 1 per step.
Differences from the reference: it steps over 48 of the 50 timesteps (`timesteps.flip(0)[1:-1]`) and encodes a
sample of the VAE posterior; here every step of the grid is inverted from the posterior mean, as every inversion
here does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invbench.ddim import DDIMSchedule
from invbench.hyperparameters import Count, NonNegative, Steps
from invbench.models import DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult
from inversions.noise_regularisation import autocorrelation_loss, gradient, kl_to_standard_normal
from pie_bench import Sample


@INVERSIONS.register("pix2pix_zero")
@dataclass
class Pix2PixZeroInversion(Inversion):
    produces = frozenset({"uncond_embeddings"})

    num_steps: Steps
    lambda_ac: NonNegative
    lambda_kl: NonNegative
    reg_steps: Count
    ac_rolls: Steps

    def regularise(self, noise: torch.Tensor) -> torch.Tensor:
        for _ in range(self.reg_steps):
            if self.lambda_ac > 0:
                for _ in range(self.ac_rolls):
                    noise = noise - self.lambda_ac / self.ac_rolls * gradient(autocorrelation_loss, noise)
            if self.lambda_kl > 0:
                noise = noise - self.lambda_kl * gradient(kl_to_standard_normal, noise)
        return noise

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = DDIMSchedule(model.scheduler_config, self.num_steps)
        source = model.encode_prompts([sample.source_prompt])
        latents = [image_latent]
        for t in reversed(schedule.timesteps):
            noise = self.regularise(model.predict_noise(latents[-1], t, source))
            latents.append(schedule.inverse_step(noise, t, latents[-1]))
        return InversionResult(schedule=schedule, latents=latents, uncond_embeddings=[source] * self.num_steps)
