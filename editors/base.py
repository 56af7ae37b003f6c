"""The editor contract and the shared two-branch denoising loop.

An editor takes any `InversionResult` (see inversions/base.py) and the sample's prompts, and returns the edited
latent and the source-branch reconstruction. `denoise_branches` calls every hook of the inversion contract, so
editors built on it compose with every inversion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import torch

from invbench.attention import AttentionController, ControllerGroup, PerSampleControllers, attention_control
from invbench.models import DiffusionModel
from invbench.registry import Registry
from inversions.base import HOOKS, InversionResult, PerSampleHooks, StepHooks
from pie_bench import Sample


@dataclass
class EditResult:
    edited: torch.Tensor  # (1, 4, h, w) latent of the target branch
    reconstruction: torch.Tensor  # (1, 4, h, w) latent of the source branch
    info: dict[str, Any] = field(default_factory=dict)  # editor-specific values for the result row


class Editor(ABC):
    """Base class of editors. Subclasses are dataclasses whose fields are their hyperparameters
    (all set from conf/editor/<name>.yaml, `guidance_scale` among them) and are registered in `EDITORS`.

    `uses` declares the inversion hooks (HOOKS names) the editor honours; a pairing with an inversion whose results
    override others is refused before any job starts (orchestration/compatibility.py). Editors built on
    `denoise_branches` honour every hook; one running its own loop declares what it handles.
    """

    name: ClassVar[str]
    families: ClassVar[frozenset[str]] = frozenset({"sd"})  # the model families it works on (MODEL_FAMILIES)
    uses: ClassVar[frozenset[str]] = frozenset(HOOKS)
    pairs_with: ClassVar[frozenset[str] | None] = None  # the inversions (registry names) it pairs with; None: any
    guidance_scale: float
    batches: ClassVar[bool] = False  # whether it implements `edit_together` (several samples per denoiser call)

    @abstractmethod
    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        """Edit `sample`'s source (inverted into `inversion`) toward its target prompt."""

    def edit_batch(
        self, model: DiffusionModel, inversions: Sequence[InversionResult], samples: Sequence[Sample]
    ) -> list[EditResult]:
        """Edit several samples, each as `edit` would (equal to float rounding): together (`edit_together`) where
        the editor `batches` and the inversions allow it (`batchable`), else one after another."""
        if self.batches and len(samples) > 1 and batchable(inversions):
            return self.edit_together(model, inversions, samples)
        return Editor.edit_together(self, model, inversions, samples)

    def edit_together(
        self, model: DiffusionModel, inversions: Sequence[InversionResult], samples: Sequence[Sample]
    ) -> list[EditResult]:
        """Several samples' edits; editors that set `batches` override it with one denoiser call per step. This
        default edits them one after another."""
        return [self.edit(model, inversion, sample) for inversion, sample in zip(inversions, samples, strict=True)]

    def source_guidance(self, state: frozenset[str]) -> float:
        """The guidance scale the source branch is denoised at, given the inversion state it is paired with: the
        scale a guidance-tuned state must be computed for (orchestration/compatibility.py). Default: `guidance_scale`."""
        return self.guidance_scale

    def fast_path(self) -> Editor:
        """This editor as the GPU fast path (`precision` other than reference) runs it: a controller that can skip
        the attention maps no step reads does so. Default: unchanged."""
        return self

    def observe_inversion(self, model: DiffusionModel, inversion: Any) -> AbstractContextManager[dict[str, Any]]:
        """A context the runner inverts in, for an editor that reads what the inversion computes (RF-Edit's recorded
        attention values). It yields a dict, filled when the context closes, which the runner stores as the
        result's `observed`: what the editor reads travels with the inversion result, not on the editor. Default:
        nothing observed (an empty dict)."""
        return nullcontext({})

    def model_problems(self, model_config: Mapping[str, Any]) -> list[str]:
        """Why this editor's settings do not fit the model a conf/model/*.yaml node describes, checked before the
        model loads (each with its fix); [] when they fit or cannot be known before loading. Default: []."""
        return []

    def prompt_problems(self, sample: Sample, tokenizer: Any, limit: int) -> list[str]:
        """Why this editor cannot edit `sample` with a text encoder that reads `limit` tokens of `tokenizer` (each
        with its fix), checked before the model loads; [] when it can. Default: [] (the prompts are cut as the
        reference pipeline cuts them; orchestration/prompt_limits.py records it)."""
        return []

    def observes_inversion(self) -> bool:
        """Whether this editor reads the inversion while it runs (then the inversion is never shared)."""
        return type(self).observe_inversion is not Editor.observe_inversion

    def prepare_sample(self, sample: Sample) -> Sample:
        """The sample as this editor's reference sees it, for the inversion and the edit alike (e.g. MasaCtrl's ""
        source prompt); the metrics always see the sample itself. Default: unchanged."""
        return sample


EDITORS: Registry[Editor] = Registry("editor")


@torch.no_grad()
def denoise_branches(
    model: DiffusionModel,
    inversion: InversionResult,
    cond: torch.Tensor,
    guidance_scale: float,
    controller: AttentionController | None = None,
    target_uncond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise B branches from the inverted noise, batched in one denoiser call per step.

    cond: (B, L, D) prompt conditioning, branch 0 being the source branch. The loop is fixed; the inversion's hooks
    (inversions/base.py, `StepHooks`) give each step's conditioning (default: `cond`, and "" as the unconditional
    embedding), add their own attention controllers, take the step (default: guided DDIM) and correct its result.
    A `controller` sees every attention map (invbench/attention.py) and may change the latents before each step
    (given the step's evaluation, for guidance by gradient) and after it.
    `target_uncond` (1, L, D), an editor's negative prompt, replaces the unconditional embedding of the target
    branches.
    Returns the final latents (B, 4, h, w).
    """
    branches = cond.shape[0]
    start = inversion.noise_latent.repeat(branches, 1, 1, 1)
    return _denoise(model, inversion.schedule, start, inversion.hooks, cond, guidance_scale, controller, target_uncond)


def batchable(inversions: Sequence[InversionResult]) -> bool:
    """Whether several samples' inversions can be denoised in one loop (`denoise_samples`): one timestep grid, and
    hooks that act on their own sample's rows only."""
    first = inversions[0]
    return all(
        PerSampleHooks.combines(inversion.hooks)
        and list(inversion.schedule.timesteps) == list(first.schedule.timesteps)
        and inversion.grid_steps == first.grid_steps
        for inversion in inversions
    )


@torch.no_grad()
def denoise_samples(
    model: DiffusionModel,
    inversions: Sequence[InversionResult],
    cond: torch.Tensor,
    guidance_scale: float,
    controllers: Sequence[AttentionController] | None = None,
) -> torch.Tensor:
    """`denoise_branches` for several samples in one denoiser call per step (`batchable` inversions).
    cond: each sample's branches in turn, the same number B per sample, its source branch first; `controllers`: one
    per sample, each seeing its own sample's rows (`PerSampleControllers`). Returns the final latents in cond's
    order."""
    branches = cond.shape[0] // len(inversions)
    start = torch.cat([inversion.noise_latent.repeat(branches, 1, 1, 1) for inversion in inversions])
    hooks = PerSampleHooks([inversion.hooks for inversion in inversions], branches)
    controller = None if controllers is None else PerSampleControllers(list(controllers), branches)
    return _denoise(model, inversions[0].schedule, start, hooks, cond, guidance_scale, controller)


def edit_samples_together(
    model: DiffusionModel,
    inversions: Sequence[InversionResult],
    samples: Sequence[Sample],
    guidance_scale: float,
    controllers: Sequence[AttentionController] | None = None,
    infos: Sequence[dict[str, Any]] | None = None,
) -> list[EditResult]:
    """Each sample's source and target branch (its own prompts), all samples in one denoiser call per step."""
    cond = model.encode_prompts([prompt for s in samples for prompt in (s.source_prompt, s.target_prompt)])
    latents = denoise_samples(model, inversions, cond, guidance_scale, controllers)
    return [
        EditResult(edited=latents[2 * k + 1 : 2 * k + 2], reconstruction=latents[2 * k : 2 * k + 1], info=info)
        for k, info in enumerate(infos or [{} for _ in samples])
    ]


def _denoise(
    model: DiffusionModel,
    schedule: Any,
    latents: torch.Tensor,
    hooks: StepHooks,
    cond: torch.Tensor,
    guidance_scale: float,
    controller: AttentionController | None = None,
    target_uncond: torch.Tensor | None = None,
) -> torch.Tensor:
    branches = latents.shape[0]
    empty = model.encode_prompts([""]).expand(branches, -1, -1)
    own = hooks.controllers(cond)
    if own:
        controller = ControllerGroup(*own, *([] if controller is None else [controller]))
    if controller is not None:
        controller.num_branches = branches
    control = nullcontext() if controller is None else attention_control(model.denoiser, controller, latents.shape[-1])
    with control:
        for i, t in enumerate(schedule.timesteps):
            step_cond, step_uncond = hooks.conditioning(i, cond, empty)
            if target_uncond is not None:
                step_uncond = torch.cat([step_uncond[:1], target_uncond.expand(branches - 1, -1, -1)])
            parts = partial(model.noise_parts, t=t, cond=step_cond, uncond=step_uncond, guidance_scale=guidance_scale)
            if controller is not None:
                controller.begin_step(i)
                latents = controller.before_step(i, latents, parts)
                parts = controller.step_noise_parts(parts)
            latents = hooks.step(schedule, i, t, latents, parts, guidance_scale)
            latents = hooks.after_step(i, latents)
            if controller is not None:
                latents = controller.end_step(i, latents)
    return latents
