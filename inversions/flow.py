"""Flow inversion: the plain (Euler) inversion of a rectified-flow model, the baseline every flow-matching
inversion paper compares with ("vanilla" inversion in RF-Inversion, Rout et al., ICLR 2025; RF-Solver, Wang et al.,
ICML 2025; FireFlow, Deng et al., ICML 2025), as DDIM inversion is for ε-models.

Contract: from x_0 (the VAE latent), up the model's flow-matching grid σ_N = 0 < … < σ_0 = 1, each step integrates
dx/dσ = v(x, σ, c) from the level it starts at: x_σ' = x_σ + (σ' − σ) v(x_σ, σ, c) (forward Euler, as the Euler
`denoise(..., inverse=True)` of the RF-Solver and FireFlow code, FLUX_Image_Edit/src/flux/sampling.py), with the
source prompt at `guidance_scale` (1: conditional only; on FLUX.1-dev the embedded guidance). Editors then sample
with the model's Euler step down the same grid. The error is first order in the step: it halves as steps double.
Cost: N evaluations (2N with classifier-free guidance above 1).

Solver-based flow inversions (rf_solver.py, fireflow.py) subclass this and replace `solver`: the same integrator
then takes both the inversion's steps and, through `SolverSampler`, the editor's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from invbench.flow_matching import FlowMatchSchedule
from invbench.hyperparameters import Guidance, Steps
from invbench.models import FLOW_TRANSFORMERS, DiffusionModel, classifier_free
from inversions.base import INVERSIONS, Inversion, InversionResult, StepHooks
from pie_bench import Sample

# velocity(x, σ) -> v: the (guided) velocity field at noise level σ
Velocity = Callable[[torch.Tensor, float], torch.Tensor]


class EulerSolver:
    """One forward-Euler step of dx/dσ = v from σ to σ' (either direction). One evaluation per step."""

    def advance(self, latent: torch.Tensor, sigma: float, next_sigma: float, velocity: Velocity) -> torch.Tensor:
        return latent + (next_sigma - sigma) * velocity(latent, sigma)


class SolverSampler(StepHooks):
    """The editor's reverse step taken by a flow solver (a fresh one per loop, as each `denoise` call of the
    reference starts its own), on the guided velocity of the step's evaluation."""

    def __init__(self, new_solver: Callable[[], EulerSolver]):
        self.new_solver = new_solver

    def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
        if i == 0:
            self.solver = self.new_solver()

        def velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
            return classifier_free(*noise_parts(x, t=schedule.timestep_at(sigma)), guidance_scale)

        sigma, next_sigma = float(schedule.sigma(t)), float(schedule.next_sigma(t))
        return self.solver.advance(latents, sigma, next_sigma, velocity)


@INVERSIONS.register("flow")
@dataclass
class FlowInversion(Inversion):
    families = FLOW_TRANSFORMERS
    num_steps: Steps
    guidance_scale: Guidance

    def solver(self) -> EulerSolver:
        """The integrator of this method's inversion (and, if `sampler` says so, of its editing)."""
        return EulerSolver()

    def sampler(self) -> StepHooks:
        """The editor's step: the model's own Euler step (StepHooks' default)."""
        return StepHooks()

    def inverted_steps(self) -> int:
        """How many of the grid's steps, from the image up, the inversion takes (the editor takes the same back)."""
        return self.num_steps

    def prompt(self, sample: Sample) -> str:
        """The prompt the inversion's velocity is conditioned on."""
        return sample.source_prompt

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        grid: FlowMatchSchedule = model.schedule(self.num_steps)
        schedule = grid if self.inverted_steps() == self.num_steps else grid.tail(self.inverted_steps())
        uncond, cond = model.encode_prompts(["", self.prompt(sample)]).chunk(2)

        def velocity(latent: torch.Tensor, sigma: float) -> torch.Tensor:
            t = schedule.timestep_at(sigma)
            return model.guided_noise(latent, t, cond, uncond, self.guidance_scale)

        solver, latents = self.solver(), [image_latent]
        for t in reversed(schedule.timesteps):
            lower, upper = float(schedule.next_sigma(t)), float(schedule.sigma(t))
            latents.append(solver.advance(latents[-1], lower, upper, velocity))
        partial = schedule is not grid
        return InversionResult(
            schedule=schedule, latents=latents, hooks=self.sampler(), grid_steps=self.num_steps if partial else None
        )
