"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., "An Edit Friendly DDPM Noise Space: Inversion and
Manipulations", CVPR 2024), as the PIE-Bench reference runs it (run_editing_edit_friendly_p2p.py and
models/edit_friendly_ddm/inversion_utils.py: η = 1, skip 12 of 50 steps, source guidance 1, SD v1.4's own scheduler
configuration; pie-bench-protocol.md §3.6, §4).

Contract: noisy versions x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε_t are drawn independently for every t of the grid (fresh
Gaussian noise each, from the job's per-sample seed). Then, from the noisiest down, each step's noise map is solved
from the DDPM (η) posterior of x_t with the source prompt: z_t = (x_{t−Δ} − μ_t(x_t)) / σ_t, and x_{t−Δ} is
re-derived as μ_t + σ_t·z_t so that rounding does not accumulate. Editing starts at the grid's step `skip` from x
there and runs the remaining steps with the stored z_t: x_{t−Δ} = μ_t(x_t; ε) + σ_t·z_t, the source branch at
`source_guidance_scale` (1: it retraces the x_t exactly, up to the UNet's batch rounding), target branches at the
editor's guidance. UNet evaluations: one per grid step for the inversion (all steps, as the reference), 2 per branch
per editing step after the skip.
As the reference: the grid is that of SD's scheduler configuration (`steps_offset: 1`, timesteps 981 … 1, as every
reference run), and the last step's noise map is set to zero (`last_noise: zero`), so the last step
adds no noise and the source branch lands near, not on, z_0. `last_noise: exact` (ours) stores that step's
remaining difference instead, and the source branch then reconstructs z_0 exactly. Prompt-to-Prompt sizes its
windows on the whole grid (InversionResult.grid_steps), as the reference's controller does while running 38 steps.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from invbench.ddim import DDIMSchedule
from invbench.errors import ConfigError
from invbench.hyperparameters import Count, Guidance, Positive, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel, classifier_free
from invbench.runtime import random_state, restore_random_state
from inversions.base import INVERSIONS, Inversion, InversionResult, StepHooks
from pie_bench import Sample


def _posterior(schedule: DDIMSchedule, t: int, latent: torch.Tensor, noise: torch.Tensor, eta: float):
    """(μ_t, s_t) of the DDPM/DDIM(η) step t → t−Δ given the predicted noise; s_t is the posterior σ_t, except on
    the grid's last step, whose target noise level (SD's final ᾱ is ᾱ_0, not 1) leaves σ = 0: there the stored
    "noise" is the remaining difference itself (s = 1), so that the last step is exact too."""
    alpha = schedule.alpha_cumprod(t).to(latent)
    alpha_prev = schedule.alpha_cumprod(schedule.previous_timestep(t)).to(latent)
    sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).clamp(min=0).sqrt()
    predicted_x0 = (latent - (1 - alpha).sqrt() * noise) / alpha.sqrt()
    mean = alpha_prev.sqrt() * predicted_x0 + (1 - alpha_prev - sigma**2).sqrt() * noise
    return mean, sigma if sigma > 0 else torch.ones_like(sigma)


@dataclass
class StoredNoiseSampler(StepHooks):
    """Edit-friendly DDPM's reverse process: a stochastic DDPM step whose noise is the stored map of the step."""

    noise_maps: list[torch.Tensor]  # z_t per editing step
    eta: Positive
    source_guidance_scale: Guidance
    step_batches: ClassVar[bool] = True  # one evaluation per step, each row on its own

    def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
        uncond, cond = noise_parts(latents)
        noise = classifier_free(uncond, cond, guidance_scale)
        noise[:1] = classifier_free(None if uncond is None else uncond[:1], cond[:1], self.source_guidance_scale)
        mean, sigma = _posterior(schedule, t, latents, noise, self.eta)
        return mean + sigma * self.noise_maps[i]


@INVERSIONS.register("edit_friendly")
@dataclass
class EditFriendlyInversion(Inversion):
    families = EPSILON_UNETS
    produces = frozenset({"step"})
    batches = True

    num_steps: Steps
    eta: Positive
    skip: Count
    source_guidance_scale: Guidance
    steps_offset: Count  # the grid's offset: SD v1.x's scheduler configuration has 1 (the reference's)
    last_noise: Literal["zero", "exact"]

    def __post_init__(self) -> None:
        if self.skip >= self.num_steps:
            raise ConfigError(
                f"inversion.skip={self.skip} must be below inversion.num_steps={self.num_steps} "
                "(conf/inversion/edit_friendly.yaml): editing runs the steps after the first `skip`"
            )

    def needs_unconditional_half(self) -> bool:
        return self.source_guidance_scale != 1  # the source branch guides at its own scale

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        return self.invert_batch(model, [image_latent], [sample])[0]

    @torch.no_grad()
    def invert_batch(
        self, model: DiffusionModel, image_latents: Sequence[torch.Tensor], samples: Sequence[Sample]
    ) -> list[InversionResult]:
        """Several samples in one denoiser call per step. Each draws its noisy versions from the generator state
        the call starts in, as it would alone: the job seeds every sample alike (the reference's setup_seed), so
        that a batch's samples get the noise each gets in its own run."""
        schedule = model.schedule(self.num_steps, steps_offset=self.steps_offset)
        count = len(samples)
        embeddings = model.encode_prompts([""] * count + [sample.source_prompt for sample in samples])
        uncond, cond = embeddings[:count], embeddings[count:]
        ascending = list(reversed(schedule.timesteps))
        start = random_state()
        draws = []
        for image_latent in image_latents:
            restore_random_state(start)
            draws.append([torch.randn_like(image_latent) for _ in ascending])
        image_latent = torch.cat(list(image_latents))
        noisy = {t: schedule.alpha_cumprod(t).sqrt() * image_latent + (1 - schedule.alpha_cumprod(t)).sqrt()
                 * torch.cat([own[n] for own in draws]) for n, t in enumerate(ascending)}  # fmt: skip
        noise_maps = []  # denoising order
        for t in schedule.timesteps:
            noise = model.guided_noise(noisy[t], t, cond, uncond, self.source_guidance_scale)
            mean, sigma = _posterior(schedule, t, noisy[t], noise, self.eta)
            previous = schedule.previous_timestep(t)
            target = noisy[previous] if previous >= 0 else image_latent
            noise_maps.append((target - mean) / sigma)
            if previous >= 0:
                noisy[previous] = mean + sigma * noise_maps[-1]
        if self.last_noise == "zero":
            noise_maps[-1] = torch.zeros_like(noise_maps[-1])  # the reference's zs[0] = 0
        edit_schedule = copy.copy(schedule)
        edit_schedule.timesteps = schedule.timesteps[self.skip :]
        edit_schedule.num_steps = len(edit_schedule.timesteps)
        trajectory = [image_latent] + [noisy[t] for t in reversed(edit_schedule.timesteps)]

        def own(batch: torch.Tensor, k: int) -> torch.Tensor:  # not a view: a cache would save the whole batch
            return batch if count == 1 else batch[k : k + 1].clone()

        return [
            InversionResult(
                schedule=edit_schedule,
                latents=[own(latent, k) for latent in trajectory],
                hooks=StoredNoiseSampler(
                    [own(z, k) for z in noise_maps[self.skip :]], self.eta, self.source_guidance_scale
                ),
                grid_steps=self.num_steps,
                info={"skipped_steps": self.skip},
            )
            for k in range(count)
        ]
