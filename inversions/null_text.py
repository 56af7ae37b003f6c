"""Null-text inversion (Mokady et al., "Null-text Inversion for Editing Real Images using Guided Diffusion Models",
CVPR 2023), as the PIE-Bench reference runs it (models/p2p/inversion.py `NullInversion`; pie-bench-protocol.md §4).

Contract: DDIM inversion with the source prompt at guidance 1 gives the pivot trajectory z*_0..z*_T. Then, from
z̄_T = z*_T, for each denoising step i (timestep t) the unconditional embedding ∅_i (initialised from ∅_{i-1}, and
∅_0 from "") is optimised with Adam, lr = learning_rate · (1 − i/100), for at most `inner_steps` iterations, to make
one guided DDIM step land on the pivot: min ‖DDIM(z̄_t, ε_∅ + w (ε_c − ε_∅)) − z*_{t−Δ}‖²; it stops early once the
loss is below early_stop + i · early_stop_growth. z̄ then advances with the optimised ∅_i. The per-step ∅_i go to
every branch while editing (or only the source branch with `single_branch`, the reference's ablation).
UNet evaluations per step: 1 (conditional) + one per iteration (with backward) + 1 (unconditional, at the optimised
∅_i, for the guided step). The reference evaluates the conditional half a second time in that step's guided call, at
the same latent and prompt; we reuse it (equal to float rounding, ~7 % fewer evaluations). No autograd graph
outlives its iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invbench.hyperparameters import Count, Guidance, NonNegative, Positive, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel, classifier_free
from inversions.base import (
    INVERSIONS,
    Inversion,
    InversionResult,
    UnconditionalEmbeddings,
    guided_step_error,
    optimise,
)
from inversions.ddim import DDIMInversion
from pie_bench import Sample


@INVERSIONS.register("nti")
@dataclass
class NullTextInversion(Inversion):
    families = EPSILON_UNETS
    produces = frozenset({"conditioning"})

    num_steps: Steps
    guidance_scale: Guidance
    inner_steps: Count
    learning_rate: Positive
    early_stop: NonNegative
    early_stop_growth: NonNegative
    single_branch: bool

    def tuned_for_guidance(self) -> float | None:
        return self.guidance_scale

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        pivot = DDIMInversion(self.num_steps, 1.0).invert(model, image_latent, sample)
        schedule, trajectory = pivot.schedule, pivot.latents
        uncond, cond = model.encode_prompts(["", sample.source_prompt]).chunk(2)
        latent = trajectory[-1]
        optimised, iterations = [], []
        for i, t in enumerate(schedule.timesteps):
            target = trajectory[self.num_steps - i - 1]
            with torch.no_grad():
                noise_cond = model.predict_noise(latent, t, cond)
            uncond = uncond.detach().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([uncond], lr=self.learning_rate * (1 - i / 100))
            taken = optimise(
                optimizer,
                lambda: guided_step_error(
                    schedule,
                    latent,
                    t,
                    model.predict_noise(latent, t, uncond),
                    noise_cond,
                    self.guidance_scale,
                    target,
                ),
                self.inner_steps,
                self.early_stop + i * self.early_stop_growth,
            )
            uncond = uncond.detach()
            optimised.append(uncond)
            iterations.append(taken)
            with torch.no_grad():
                # ε_cond of this latent was computed above; only the unconditional half changed
                noise = classifier_free(model.predict_noise(latent, t, uncond), noise_cond, self.guidance_scale)
                latent = schedule.step(noise, t, latent)
        return InversionResult(
            schedule=schedule,
            latents=trajectory,
            hooks=UnconditionalEmbeddings(optimised, "source" if self.single_branch else "all"),
            info={"optimisation_steps": sum(iterations), "optimisation_steps_per_timestep": iterations},
        )
