"""DDIM inversion (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021; as used for real-image editing by
Mokady et al., "Null-text Inversion for Editing Real Images", CVPR 2023, §3).

Contract: deterministic. Runs the DDIM ODE backwards from z_0 with the source prompt, approximating the noise at
each step by eps(z_{t-Δ}, t): z_t = √ᾱ_t · x̂_0 + √(1-ᾱ_t) · eps with x̂_0 = (z_{t-Δ} - √(1-ᾱ_{t-Δ}) eps) / √ᾱ_{t-Δ}.
With `guidance_scale` 1 (the reference: conditional branch only) denoising with the source prompt at guidance 1
reconstructs z_0 up to that approximation; classifier-free guidance > 1 while editing makes it drift, which is the
error every other inversion in this package tries to remove. One UNet evaluation per step (two with guidance > 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invbench.hyperparameters import Guidance, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult
from pie_bench import Sample


@INVERSIONS.register("ddim")
@dataclass
class DDIMInversion(Inversion):
    families = EPSILON_UNETS
    num_steps: Steps
    guidance_scale: Guidance

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = model.schedule(self.num_steps)
        uncond, cond = model.encode_prompts(["", sample.source_prompt]).chunk(2)
        latents = [image_latent]
        for t in reversed(schedule.timesteps):
            noise = model.guided_noise(latents[-1], t, cond, uncond, self.guidance_scale)
            latents.append(schedule.inverse_step(noise, t, latents[-1]))
        return InversionResult(schedule=schedule, latents=latents)
