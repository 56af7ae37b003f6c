"""FPI, Fixed-point Inversion (Meiri, Samuel, Darshan, Chechik, Avidan and Ben-Ari, "Fixed-point Inversion for
Text-to-image diffusion models", arXiv 2312.12540 v1), as its official code runs it (github.com/dvirsamuel/FPI,
archived at 0100d59: main.py; inversion.py `MyInvertFixedPoint.invert` / `optimize`).

Contract:
1. The prompt-aware adjustment (main.py's StableDiffusionImg2ImgPipeline call): z_0, a VAE posterior sample, is
   noised to the last `int(adjustment_grid_steps · adjustment_strength)` timesteps of the `adjustment_grid_steps`
   grid with noise from the global generator (t = 21 at 50 and 0.05) and denoised by guided DDIM with the source
   prompt at `guidance_scale`: z_0 moves to where the model, given the prompt, would put it.
2. Inversion: each step solves z_t = DDIM⁻¹(z_{t−Δ}; ε_w(z_t, t)) by `iterations` fixed-point iterations from
   z_{t−Δ} (the first is DDIM inversion's guess), ε_w classifier-free guided at `guidance_scale` with "" as the
   unconditional prompt.
The result is a plain trajectory from the adjusted latent (it composes with every editor); its source reconstructs
where the editor guides at `guidance_scale` (the authors edit at 2). UNet evaluations: per step `iterations`, each
doubled by guidance; plus the adjustment's steps, doubled.
`fpi_plain` (inversions/fixed_point.py) is ours: plain iterations at guidance 1 without the adjustment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from invbench.hyperparameters import Count, Fraction, Guidance, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult, encode_posterior
from pie_bench import Sample


@INVERSIONS.register("fpi")
@dataclass
class FixedPointInversion(Inversion):
    families = EPSILON_UNETS

    num_steps: Steps
    iterations: Count
    guidance_scale: Guidance
    adjustment_strength: Fraction
    adjustment_grid_steps: Steps
    image_latent: Literal["posterior_sample", "posterior_mean"]

    def encode_source(self, model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
        return encode_posterior(model, image, self.image_latent)  # the img2img pipeline's global-RNG sample

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        uncond, cond = model.encode_prompts(["", sample.source_prompt]).chunk(2)
        adjusted = self.adjust(model, image_latent, cond, uncond)
        schedule = model.schedule(self.num_steps)
        latents = [adjusted]
        for t in reversed(schedule.timesteps):
            previous = latent = latents[-1]
            for _ in range(self.iterations):
                noise = model.guided_noise(latent, t, cond, uncond, self.guidance_scale)
                latent = schedule.inverse_step(noise, t, previous)
            latents.append(latent)
        return InversionResult(
            schedule=schedule,
            latents=latents,
            info={"fixed_point_iterations": self.iterations * self.num_steps},
        )

    def adjust(
        self, model: DiffusionModel, image_latent: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor
    ) -> torch.Tensor:
        """The img2img pass of main.py: noise to the grid's last steps, denoise them with the source prompt."""
        grid = model.schedule(self.adjustment_grid_steps)
        steps = int(self.adjustment_grid_steps * self.adjustment_strength)  # the pipeline's init_timestep
        if steps == 0:
            return image_latent
        timesteps = grid.timesteps[-steps:]
        noise = torch.randn(image_latent.shape, device=image_latent.device, dtype=image_latent.dtype)
        alpha = grid.alpha_cumprod(timesteps[0]).to(image_latent)
        latent = alpha**0.5 * image_latent + (1 - alpha) ** 0.5 * noise  # DDIMScheduler.add_noise
        for t in timesteps:
            latent = grid.step(model.guided_noise(latent, t, cond, uncond, self.guidance_scale), t, latent)
        return latent
