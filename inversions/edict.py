"""EDICT, Exact Diffusion Inversion via Coupled Transformations (Wallace et al., CVPR 2023), as the PIE-Bench
reference runs it (`EDICT_editing`: p = 0.93, strength 0.8, guidance 3, float64; pie-bench-protocol.md §3.6).

Contract: two coupled latents (x, y), both z_0 at the start, carried in float64. A denoising step t → t−Δ updates
one latent with the noise predicted at the other, then the other with the noise at the first's new value, then mixes:
  step i even:  x' = DDIM(x; ε(y)),  y' = DDIM(y; ε(x'))      step i odd:  y' = DDIM(y; ε(x)),  x' = DDIM(x; ε(y'))
  then x'' = p·x' + (1−p)·y',  y'' = p·y' + (1−p)·x''
(the reference's `leapfrog_steps`: the latent updated first alternates from step to step; ε classifier-free-guided
at the method's own `guidance_scale` with the branch's prompt), and inversion runs the algebraic inverse of exactly
that, step by step in reverse, so denoising with the source prompt returns to z_0 up to floating-point rounding
(≤1e-6 relative with the model in float64, `model.dtype=float64`; in float32 the UNet's rounding of its inputs
bounds it). Only the lowest `strength` fraction of the timestep grid is used, as in the reference. Every branch
uses this reverse process and EDICT's guidance, whatever the editor's guidance; attention controllers see both UNet
calls of a step. The grid is the reference's own DDIMScheduler's (`steps_offset` 0: 980 … 0 at 50 steps, of which
strength 0.8 keeps 780 … 0; its scheduler is built by hand and never passes through a pipeline, unlike the P2P
scripts'). z_0 is a sample of the VAE posterior as the reference draws it: `coupled_stablediffusion(seed=1)` reseeds
the device's default generator with 1 (`torch.cuda.manual_seed(1)`) before each call's sample, whose noise early
diffusers draws in float32; so its reconstruction and its edit start from the same sample, and so do ours (a
generator seeded with `posterior_seed` on the model's device, float32 noise). `posterior_mean` is ours.
The reference's `edict+p2p` is `editor=p2p_edict` (editors/p2p_edict.py). UNet evaluations: 2 per inversion step and 2 per branch per editing step, each doubled by
classifier-free guidance when guidance_scale > 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import torch

from invbench.errors import ConfigError
from invbench.hyperparameters import Guidance, Range, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel, classifier_free
from inversions.base import INVERSIONS, Inversion, InversionResult, StepHooks
from pie_bench import Sample


def _mix_forward(x: torch.Tensor, y: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = p * x + (1 - p) * y
    return x, p * y + (1 - p) * x


def _mix_inverse(x: torch.Tensor, y: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = (y - (1 - p) * x) / p
    return (x - (1 - p) * y) / p, y


@dataclass
class CoupledSampler(StepHooks):
    """EDICT's reverse process: the coupled latents x, y take alternating guided DDIM steps and are mixed."""

    start_y: torch.Tensor
    mix: Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]
    guidance_scale: Guidance
    model_dtype: torch.dtype
    _x: torch.Tensor | None = field(default=None, init=False)
    _y: torch.Tensor | None = field(default=None, init=False)
    _returned: torch.Tensor | None = field(default=None, init=False)

    def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
        if i == 0:
            self._x, self._y = latents.double(), self.start_y.double().expand_as(latents).clone()
        elif not torch.equal(latents, self._returned):  # an attention controller changed the latents (local blend)
            self._x = latents.double()

        def noise(latent: torch.Tensor) -> torch.Tensor:
            uncond, cond = noise_parts(latent.to(self.model_dtype))
            if uncond is None and self.guidance_scale != 1:
                raise ConfigError("edict guides at its own guidance_scale; the editor's guidance must not be 1")
            return classifier_free(uncond, cond, self.guidance_scale).double()

        if i % 2 == 0:  # leapfrog: the latent updated first alternates
            x = schedule.step(noise(self._y), t, self._x)
            y = schedule.step(noise(x), t, self._y)
        else:
            y = schedule.step(noise(self._x), t, self._y)
            x = schedule.step(noise(y), t, self._x)
        self._x, self._y = _mix_forward(x, y, self.mix)
        self._returned = self._x.to(self.model_dtype)
        return self._returned


@INVERSIONS.register("edict")
@dataclass
class EDICTInversion(Inversion):
    families = EPSILON_UNETS
    produces = frozenset({"step"})

    num_steps: Steps
    strength: Annotated[float, Range(low=0, high=1, low_open=True)]
    mix: Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]
    guidance_scale: Guidance
    image_latent: Literal["posterior_sample", "posterior_mean"]
    posterior_seed: int  # the reference's coupled_stablediffusion(seed=1)
    steps_offset: Literal[0, 1]  # the grid's offset: 0 in the reference's hand-built scheduler

    def needs_unconditional_half(self) -> bool:
        return self.guidance_scale != 1  # every branch guides at EDICT's own scale

    def encode_source(self, model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
        if self.image_latent == "posterior_mean":
            return model.encode_image(image)
        generator = torch.Generator(model.device).manual_seed(self.posterior_seed)
        return model.encode_image(image, generator=generator, noise_dtype=torch.float32)

    @torch.no_grad()
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        # float64 ᾱ as the reference's scheduler (numpy): the reference runs in float64 throughout
        schedule = model.schedule(self.num_steps, steps_offset=self.steps_offset).with_float64_alphas()
        used = int(self.strength * self.num_steps)
        schedule.timesteps, schedule.num_steps = schedule.timesteps[self.num_steps - used :], used
        uncond, cond = model.encode_prompts(["", sample.source_prompt]).chunk(2)

        def noise(latent: torch.Tensor, t: int) -> torch.Tensor:
            guided = model.guided_noise(latent.to(model.dtype), t, cond, uncond, self.guidance_scale)
            return guided.double()

        x = y = image_latent.double()
        trajectory = [x]
        for k, t in enumerate(reversed(schedule.timesteps)):
            x, y = _mix_inverse(x, y, self.mix)
            if (used - 1 - k) % 2 == 0:  # undo denoising step used-1-k: its second update first
                y = schedule.inverse_step(noise(x, t), t, y)
                x = schedule.inverse_step(noise(y, t), t, x)
            else:
                x = schedule.inverse_step(noise(y, t), t, x)
                y = schedule.inverse_step(noise(x, t), t, y)
            trajectory.append(x)
        return InversionResult(
            schedule=schedule,
            latents=trajectory,  # float64: the sampler starts from x_T at full precision
            hooks=CoupledSampler(y, self.mix, self.guidance_scale, model.dtype),
            grid_steps=self.num_steps,
            info={"edict_steps": used},
        )
