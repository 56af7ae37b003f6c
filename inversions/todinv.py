"""Task-Oriented Diffusion Inversion (TODInv; seed 002, §3.2-3.3 and §4 implementation details).

Contract: DDIM inversion with the source prompt, where at every inversion step (z_{t-Δ} -> z_t) the conditional
embeddings of the extended P* space — one per UNet resolution level and per timestep — are optimised so that one
guided DDIM step from z_t (ω = `guidance_scale`, unconditional "") lands back on z_{t-Δ}: AdamW, `learning_rate`,
at most `inner_steps` iterations, stopping early like NTI (loss < early_stop + i · early_stop_growth, i the denoising
index). Only the embeddings *unrelated* to the sample's edit class are optimised: appearance edits tune the
structure levels (latent side / 4 and / 8: 16 and 8 for SD), structure edits tune the appearance levels (side / 1
and / 2: 64 and 32), global edits tune all; the others stay bit-identical to the source prompt's embedding. Each
timestep starts from the previous one's result. Editing reads the per-level embeddings in the source branch and
c_target + (c_level − c_source) in the target branches (Eq. 10; `LevelPrompts`, its step hooks).
UNet evaluations per step: 1 (inversion) + 1 (unconditional, reused) + one per iteration (with backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from invbench.attention import LevelConditioning, attention_control, attention_sites
from invbench.errors import InvbenchError
from invbench.hyperparameters import Count, Guidance, NonNegative, Positive, Steps, at_least
from invbench.models import DiffusionModel
from inversions.base import (
    INVERSIONS,
    Inversion,
    InversionResult,
    StepHooks,
    guided_step_error,
    optimise,
)
from pie_bench import Sample, edit_class_problem


class LevelPrompts(StepHooks):
    """Editing in TODInv's P* space: at step i, cross-attention layers at a tuned resolution read the tuned
    embedding in the source branch and c_target + (embedding − c_source) in the target branches (Eq. 10); other
    resolutions keep the prompts."""

    def __init__(self, per_step: list[dict[int, torch.Tensor]]):
        self.per_step = per_step  # step -> {query resolution: (1, 77, D)}

    def controllers(self, cond: torch.Tensor) -> list[LevelConditioning]:
        return [_StepLevels(self.per_step, cond)]


class _StepLevels(LevelConditioning):
    def __init__(self, per_step: list[dict[int, torch.Tensor]], cond: torch.Tensor):
        super().__init__()
        self.per_step, self.cond = per_step, cond

    def begin_step(self, step: int) -> None:
        super().begin_step(step)
        cond = self.cond
        self.embeddings = {
            resolution: torch.cat([tuned, cond[1:] + (tuned - cond[:1])])
            for resolution, tuned in self.per_step[step].items()
        }


@INVERSIONS.register("todinv")
@dataclass
class TaskOrientedInversion(Inversion):
    produces = frozenset({"controllers"})

    num_steps: Steps
    guidance_scale: Guidance
    inner_steps: Count
    learning_rate: Positive
    early_stop: NonNegative
    early_stop_growth: NonNegative
    appearance_levels: list[Annotated[int, at_least(1)]]
    structure_levels: list[Annotated[int, at_least(1)]]

    def tuned_for_guidance(self) -> float | None:
        return self.guidance_scale

    def tuned_levels(self, sample: Sample, present: set[int], side: int) -> set[int]:
        appearance = {side // divisor for divisor in self.appearance_levels} & present
        structure = {side // divisor for divisor in self.structure_levels} & present
        by_class = {"structure": appearance, "appearance": structure, "global": appearance | structure}
        problem = edit_class_problem(sample.edit_class)  # every dataset reader refuses these already
        if problem:
            raise InvbenchError(f"sample {sample.id}: {problem}")
        return by_class[sample.edit_class]

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = model.schedule(self.num_steps)
        uncond, source = model.encode_prompts(["", sample.source_prompt]).chunk(2)
        side = image_latent.shape[-1]
        present = {site.resolution for site in attention_sites(model.denoiser, side) if site.is_cross}
        tuned_levels = self.tuned_levels(sample, present, side)
        current = {resolution: source for resolution in sorted(present)}
        per_step: list[dict[int, torch.Tensor]] = [{}] * self.num_steps
        trajectory, iterations = [image_latent], [0] * self.num_steps
        levels = LevelConditioning()
        with attention_control(model.denoiser, levels, side):
            for k, t in enumerate(reversed(schedule.timesteps)):
                i = self.num_steps - 1 - k  # denoising index of this timestep
                previous = trajectory[-1]
                levels.embeddings = {}  # plain prompts for the inversion step and the unconditional prediction
                with torch.no_grad():
                    latent = schedule.inverse_step(model.predict_noise(previous, t, source), t, previous)
                    noise_uncond = model.predict_noise(latent, t, uncond)
                tuned = {r: current[r].detach().clone().requires_grad_(True) for r in sorted(tuned_levels)}
                levels.embeddings = {**current, **tuned}
                if tuned:
                    iterations[i] = optimise(
                        torch.optim.AdamW(list(tuned.values()), lr=self.learning_rate),
                        lambda: guided_step_error(
                            schedule,
                            latent,
                            t,
                            noise_uncond,
                            model.predict_noise(latent, t, source),
                            self.guidance_scale,
                            previous,
                        ),
                        self.inner_steps,
                        self.early_stop + i * self.early_stop_growth,
                    )
                current = {**current, **{r: embedding.detach() for r, embedding in tuned.items()}}
                per_step[i] = current
                trajectory.append(latent)
        return InversionResult(
            schedule=schedule,
            latents=trajectory,
            hooks=LevelPrompts(per_step),
            info={
                "optimisation_steps": sum(iterations),
                "optimisation_steps_per_timestep": iterations,
                "edit_class": sample.edit_class,
                "tuned_levels": sorted(tuned_levels),
            },
        )
