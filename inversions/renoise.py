"""ReNoise (Garibi et al., "ReNoise: Real Image Inversion Through Iterative Noising", ECCV 2024).

Reference: the official code, garibida/ReNoise-Inversion (src/renoise_inversion.py `inversion_step`, its SD pipeline
src/pipes/sd_inversion_pipeline.py and main.py), run as examples/inversion_example_sd.py runs it on SD v1.5: 50
DDIM steps on SD's grid (steps_offset 1: timesteps 1, 21, ..., 981), the source prompt without guidance, 1
renoising iteration, averaging and noise regularisation as src/config.py, no noise correction, seed 7865.

Contract: each DDIM-inversion step z_{t−Δ} → z_t starts from the DDIM guess and renoises: for i = 0 .. n,
ε_i = ε(ẑ_i, t, c_src) with ẑ_0 = z_{t−Δ}, and ẑ_{i+1} = DDIM⁻¹(z_{t−Δ}; R(ε_i)) where R, the noise
regularisation, applies from the first averaged iterate on. The noise predictions ε_i of the iterates i in the
averaging range [lo, hi) — (0, 5) for t < 250 (where n is capped at 5), else (8, 10) — are averaged and, where any
were, the step ends at z_t = DDIM⁻¹(z_{t−Δ}; R(mean ε_i)). So with the reference's n = 1 the steps t ≥ 250 are
plain renoising (two UNet passes, no averaging, no regularisation) and the steps t < 250 average both.
R is `reg_steps` rounds of one gradient step on ReNoise's patch-wise KL divergence to ε(z_opt, t) (gradient
clipped to ±100, weight `lambda_kl`) followed by `ac_rolls` steps on pix2pix-zero's auto-correlation loss (weight
`lambda_ac` / `ac_rolls`, shifts drawn from the method's own generator).

Reference details kept as they are: the image latent is a sample of the VAE posterior (`image_latent`), drawn from
the generator seeded `seed` that also draws the auto-correlation shifts; the KL target ε(z_opt, t) is evaluated on
z_opt = z_0 itself, because the SD pipeline replaces the scheduler's add_noise with the identity (for SDXL-Turbo
it is z_0 noised to t); it shares the first UNet call of every step with ε_0 (a batch of two).
Not implemented: the noise correction of the stochastic samplers (off in the reference's SD run).

A plain trajectory, edited with guided DDIM on the same grid. UNet evaluations per step: n + 2 (the first pass is a
batch of two) with regularisation, n + 1 without, n capped at 5 below t = 250; the regularisers' gradients are taken
on the noise, never through the UNet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from invbench.errors import ConfigError
from invbench.hyperparameters import Count, NonNegative, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult
from inversions.noise_regularisation import autocorrelation_loss, gradient, patch_kl
from pie_bench import Sample

KL_GRADIENT_CLIP = 100.0  # the reference clips the KL gradient elementwise to ±100


@INVERSIONS.register("renoise")
@dataclass
class ReNoiseInversion(Inversion):
    families = EPSILON_UNETS
    num_steps: Steps
    renoise_steps: Count
    first_steps_below: Count  # timesteps below this use the first-steps cap and averaging range
    first_renoise_steps: Count  # the cap on renoise_steps there
    average_first_range: list[Count]  # [lo, hi): the iterates averaged below first_steps_below
    average_range: list[Count]  # [lo, hi): the iterates averaged elsewhere
    reg_steps: Count
    ac_rolls: Steps
    lambda_kl: NonNegative
    lambda_ac: NonNegative
    image_latent: Literal["posterior_sample", "posterior_mean"]
    seed: int
    steps_offset: Count

    def __post_init__(self) -> None:
        for key in ("average_first_range", "average_range"):
            value = getattr(self, key)
            if len(value) != 2 or value[0] > value[1]:
                raise ConfigError(
                    f"inversion.{key}={value!r} must be two iterate indices [lo, hi] with lo <= hi "
                    "(conf/inversion/renoise.yaml): the renoising iterates lo .. hi-1 are averaged"
                )

    def encode_source(self, model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
        if self.image_latent == "posterior_mean":
            return model.encode_image(image)
        return model.encode_image(image, generator=torch.Generator().manual_seed(self.seed))

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = model.schedule(self.num_steps, steps_offset=self.steps_offset)
        cond = model.encode_prompts([sample.source_prompt])
        generator = torch.Generator().manual_seed(self.seed)
        # the reference's generator draws the posterior sample, the img2img noise and the forward noise (both unused
        # on SD) before the regularisation's shifts; drawing the same keeps the shifts the reference's
        for _ in range(3):
            torch.randn(image_latent.shape, generator=generator, dtype=image_latent.dtype)
        latents, counts = [image_latent], {"renoising_passes": 0, "regularised_noise_maps": 0}
        for t in reversed(schedule.timesteps):
            latent, passes, regularised = self._step(model, schedule, t, latents[-1], image_latent, cond, generator)
            latents.append(latent)
            counts["renoising_passes"] += passes
            counts["regularised_noise_maps"] += regularised if self.reg_steps > 0 else 0
        return InversionResult(schedule=schedule, latents=latents, info=counts)

    def _step(self, model, schedule, t, previous, clean, cond, generator) -> tuple[torch.Tensor, int, int]:
        """z_{t−Δ} -> z_t; also the UNet passes on the iterates and the noise maps regularised."""
        first = t < self.first_steps_below
        iterations = min(self.first_renoise_steps, self.renoise_steps) if first else self.renoise_steps
        low, high = self.average_first_range if first else self.average_range
        optimal, average, regularised, latent = None, None, 0, previous
        for i in range(iterations + 1):
            if i == 0 and self.reg_steps > 0:  # the KL target shares the first call, as the reference
                optimal, noise = model.predict_noise(torch.cat([clean, latent]), t, cond.expand(2, -1, -1)).chunk(2)
            else:
                noise = model.predict_noise(latent, t, cond)
            if low <= i < high:
                seen = i - low
                average = noise.clone() if average is None else seen * average / (seen + 1) + noise / (seen + 1)
            if i >= low:
                noise, regularised = self.regularise(noise, optimal, generator), regularised + 1
            latent = schedule.inverse_step(noise, t, previous)
        if average is not None:
            latent = schedule.inverse_step(self.regularise(average, optimal, generator), t, previous)
            regularised += 1
        return latent, iterations + 1, regularised

    def regularise(self, noise: torch.Tensor, optimal: torch.Tensor | None, generator) -> torch.Tensor:
        """The reference's noise_regularization: rounds of a KL step toward `optimal`, then auto-correlation steps."""
        for _ in range(self.reg_steps):
            if self.lambda_kl > 0:
                step = gradient(lambda x: patch_kl(x, optimal), noise).clamp(-KL_GRADIENT_CLIP, KL_GRADIENT_CLIP)
                noise = noise - self.lambda_kl * step
            if self.lambda_ac > 0:
                for _ in range(self.ac_rolls):
                    step = gradient(lambda x: autocorrelation_loss(x, generator), noise) / self.ac_rolls
                    noise = noise - self.lambda_ac * step
        return noise
