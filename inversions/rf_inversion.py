"""RF-Inversion (Rout et al., "Semantic Image Inversion and Editing using Rectified Stochastic Differential
Equations", ICLR 2025; official code: the authors' diffusers community pipeline
examples/community/pipeline_flux_rf_inversion.py, `invert` (Algorithm 1) and `__call__` (Algorithm 2)).

Contract, as the reference runs it on FLUX.1-dev:
- x_0: a sample of the VAE posterior drawn from the job's per-sample seed, as the reference's `encode_image`
  (`latent_dist.sample()`); `image_latent: posterior_mean` (ours) takes the mean.
- Controlled forward ODE: from Y = x_0 and a Gaussian target y_1 (drawn from the job's per-sample seed), for
  i = 0 .. N−1 with t_i = i / (N + 1), Y ← Y + [u + γ ((y_1 − Y) / (1 − t_i) − u)] (σ_i − σ_{i+1}), u the velocity at
  (Y, t_i) for the `prompt` ("" in the reference) at embedded guidance `guidance_scale` (0 in the reference); σ the
  model's grid. γ = 0 is the uncontrolled ODE on this grid; γ = 1 lands on y_1.
- Controlled reverse ODE (its `StepHooks.step`, used by every editor's loop): over the denoising steps
  [⌊start·N⌋, ⌊stop·N⌋), the velocity is pulled toward the source, v̂ = −v + η ((x_0 − x) / σ_i + v); elsewhere the
  plain −v; x ← x + v̂ (σ_i − σ_{i+1}). η = 0 is the model's Euler step.
The reference's quirks are kept: t_i divides by N + 1 (its sigma list has the final 0), and the forward loop takes
the grid's step sizes in the denoising order. Cost: N evaluations to invert, N per branch to edit.
The reference edits at embedded guidance 3.5 (its `guidance_scale`); invbench's FLUX models edit at 2 unless told
(`guidance_scale=3.5` reproduces it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from invbench.flow_matching import FlowMatchSchedule
from invbench.hyperparameters import Fraction, Guidance, NonNegative, Steps
from invbench.models import DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult, StepHooks, encode_posterior
from pie_bench import Sample


@dataclass
class ControlledReverse(StepHooks):
    """Algorithm 2: the reverse ODE steered toward the source latent over a window of steps."""

    source: torch.Tensor
    eta: float
    start: int
    stop: int

    def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
        _, velocity = noise_parts(latents)  # guidance-distilled: one evaluation
        toward_data = -velocity
        if self.start <= i < self.stop:
            toward_source = (self.source - latents) / schedule.sigma(t)  # (y_0 − x) / (1 − t_i), t_i = 1 − σ_i
            toward_data = toward_data + self.eta * (toward_source - toward_data)
        return latents + toward_data * (schedule.sigma(t) - schedule.next_sigma(t))


@INVERSIONS.register("rf_inversion")
@dataclass
class RFInversion(Inversion):
    families = frozenset({"flux"})  # the reference runs FLUX.1-dev; its embedded guidance of 0 has no SD3 meaning
    produces = frozenset({"step"})
    num_steps: Steps
    gamma: Fraction
    eta: NonNegative
    start: Fraction
    stop: Fraction
    guidance_scale: Guidance
    prompt: Literal["empty", "source"] = "empty"
    image_latent: Literal["posterior_sample", "posterior_mean"] = "posterior_sample"

    def encode_source(self, model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
        return encode_posterior(model, image, self.image_latent)  # the reference's global-RNG sample by default

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule: FlowMatchSchedule = model.schedule(self.num_steps)
        prompt = "" if self.prompt == "empty" else sample.source_prompt
        conditioning = model.encode_prompts([prompt])
        sigmas = [float(schedule.sigma(t)) for t in schedule.timesteps] + [0.0]
        target = model.noise_like(image_latent)  # y_1, drawn as the reference draws it (packed on FLUX)
        latents = [image_latent]
        for i in range(self.num_steps):
            t_i = i / (self.num_steps + 1)
            current = latents[-1]
            velocity = model.predict_noise(current, t_i * 1000, conditioning, guidance=self.guidance_scale)
            toward_target = (target - current) / (1 - t_i)
            controlled = velocity + self.gamma * (toward_target - velocity)
            latents.append(current + controlled * (sigmas[i] - sigmas[i + 1]))
        window = (int(self.start * self.num_steps), min(int(self.stop * self.num_steps), self.num_steps))
        hooks = ControlledReverse(source=image_latent, eta=self.eta, start=window[0], stop=window[1])
        return InversionResult(schedule=schedule, latents=latents, hooks=hooks)
