"""Prompt Tuning Inversion (Dong et al., "Prompt Tuning Inversion for Text-Driven Image Editing Using Diffusion
Models", ICCV 2023; Algorithm 1).

Contract: DDIM inversion *without* text guidance (ω = 0: the unconditional prediction) gives z*_0..z*_T. From
z̃_T = z*_T and c = c* (the target prompt's embedding; PTI needs no source prompt), for each step t = T..1 the
conditional embedding c_t (initialised from c_{t+1}) takes `iterations` gradient-descent steps of size
`learning_rate` (β) on ‖z*_{t−1} − DDIM(z̃_t, ε_∅ + ω (ε_{c_t} − ε_∅))‖², and z̃ advances with c_t. Editing uses c_t in
the source branch (the reconstruction) and c = η·c* + (1 − η)·c_t in the target branches (Eq. 9): η = 0 reconstructs,
η = 1 is DDIM-Edit. UNet evaluations per step: 1 (unconditional, reused) + one per iteration (with backward) + 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invbench.hyperparameters import Count, Fraction, Guidance, Positive, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult, StepHooks
from pie_bench import Sample


@dataclass
class TunedPrompt(StepHooks):
    """Editing with PTI's tuned embedding: the source branch conditions on c*_i, the target branches on
    η · c_target + (1 − η) · c*_i (the paper's condition interpolation)."""

    embeddings: list[torch.Tensor]
    eta: float

    def conditioning(self, i, cond, uncond):
        tuned = self.embeddings[i]
        return torch.cat([tuned, self.eta * cond[1:] + (1 - self.eta) * tuned]), uncond


@INVERSIONS.register("pti")
@dataclass
class PromptTuningInversion(Inversion):
    families = EPSILON_UNETS
    produces = frozenset({"conditioning"})

    num_steps: Steps
    guidance_scale: Guidance
    iterations: Count
    learning_rate: Positive
    eta: Fraction

    def tuned_for_guidance(self) -> float | None:
        return self.guidance_scale

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = model.schedule(self.num_steps)
        uncond, embedding = model.encode_prompts(["", sample.target_prompt]).chunk(2)
        trajectory = [image_latent]
        with torch.no_grad():
            for t in reversed(schedule.timesteps):
                noise = model.predict_noise(trajectory[-1], t, uncond)
                trajectory.append(schedule.inverse_step(noise, t, trajectory[-1]))
        latent, tuned = trajectory[-1], []
        for i, t in enumerate(schedule.timesteps):
            goal = trajectory[self.num_steps - i - 1]
            with torch.no_grad():
                noise_uncond = model.predict_noise(latent, t, uncond)
            for _ in range(self.iterations):
                embedding = embedding.detach().requires_grad_(True)
                noise_cond = model.predict_noise(latent, t, embedding)
                noise = noise_uncond + self.guidance_scale * (noise_cond - noise_uncond)
                loss = (schedule.step(noise, t, latent) - goal).pow(2).sum()
                (gradient,) = torch.autograd.grad(loss, embedding)
                embedding = embedding.detach() - self.learning_rate * gradient
            embedding = embedding.detach()
            tuned.append(embedding)
            with torch.no_grad():
                noise = model.guided_noise(latent, t, embedding, uncond, self.guidance_scale)
                latent = schedule.step(noise, t, latent)
        return InversionResult(
            schedule=schedule,
            latents=trajectory,
            hooks=TunedPrompt(tuned, self.eta),
            source_tokens="target",  # c_t starts from the target prompt's embedding: its tokens are the target's
            info={"optimisation_steps": self.iterations * self.num_steps},
        )
