"""DDIM inversion (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021; as used for real-image editing by
Mokady et al., "Null-text Inversion for Editing Real Images", CVPR 2023, §3).

Contract: deterministic. Runs the DDIM ODE backwards from z_0 with the source prompt, approximating the noise at
each step by eps(z_{t-Δ}, t): z_t = √ᾱ_t · x̂_0 + √(1-ᾱ_t) · eps with x̂_0 = (z_{t-Δ} - √(1-ᾱ_{t-Δ}) eps) / √ᾱ_{t-Δ}.
With `guidance_scale` 1 (the reference: conditional branch only) denoising with the source prompt at guidance 1
reconstructs z_0 up to that approximation; classifier-free guidance > 1 while editing makes it drift, which is the
error every other inversion in this package tries to remove. One UNet evaluation per step (two with guidance > 1).
Batches: several samples go through the denoiser together, one call per step.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    batches = True

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        return self.invert_batch(model, [image_latent], [sample])[0]

    @torch.no_grad()
    def invert_batch(
        self, model: DiffusionModel, image_latents: Sequence[torch.Tensor], samples: Sequence[Sample]
    ) -> list[InversionResult]:
        schedule = model.schedule(self.num_steps)
        count = len(samples)
        embeddings = model.encode_prompts([""] * count + [sample.source_prompt for sample in samples])
        uncond, cond = embeddings[:count], embeddings[count:]
        latents = [torch.cat(list(image_latents))]
        for t in reversed(schedule.timesteps):
            noise = model.guided_noise(latents[-1], t, cond, uncond, self.guidance_scale)
            latents.append(schedule.inverse_step(noise, t, latents[-1]))
        if count == 1:
            return [InversionResult(schedule=schedule, latents=latents)]
        # each sample's own tensors (a view would keep, and a cache would save, the whole batch)
        return [
            InversionResult(schedule=schedule, latents=[latent[k : k + 1].clone() for latent in latents])
            for k in range(count)
        ]
