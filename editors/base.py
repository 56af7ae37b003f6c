"""The editor contract and the shared two-branch denoising loop.

An editor takes any `InversionResult` (see inversions/base.py for what each field means) and the sample's prompts,
and returns the edited latent and the source-branch reconstruction. `denoise_branches` honours every per-step field
of the inversion contract, so editors built on it compose with every inversion.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import torch

from editors.attention import (
    AttentionController,
    ControllerGroup,
    LevelConditioning,
    ValueModulation,
    attention_control,
)
from invbench.models import DiffusionModel, classifier_free
from invbench.registry import Registry
from inversions.base import INVERSION_STATE, InversionResult
from pie_bench import Sample


@dataclass
class EditResult:
    edited: torch.Tensor  # (1, 4, h, w) latent of the target branch
    reconstruction: torch.Tensor  # (1, 4, h, w) latent of the source branch
    info: dict[str, Any] = field(default_factory=dict)  # editor-specific values for the result row


class Editor(ABC):
    """Base class of editors. Subclasses are dataclasses whose fields are their hyperparameters
    (all set from conf/editor/<name>.yaml, `guidance_scale` among them) and are registered in `EDITORS`.

    `uses` declares the inversion state (INVERSION_STATE fields) the editor honours; a pairing with an inversion
    whose results carry other state is refused before any job starts (invbench/compatibility.py). Editors built on
    `denoise_branches` honour every field; one running its own loop declares what it handles.
    """

    name: ClassVar[str]
    families: ClassVar[frozenset[str]] = frozenset({"sd"})  # the model families it works on (MODEL_FAMILIES)
    uses: ClassVar[frozenset[str]] = frozenset(INVERSION_STATE)
    guidance_scale: float

    @abstractmethod
    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        """Edit `sample`'s source (inverted into `inversion`) toward its target prompt."""

    def source_guidance(self, state: frozenset[str]) -> float:
        """The guidance scale the source branch is denoised at, given the inversion state it is paired with: the
        scale a guidance-tuned state must be computed for (invbench/compatibility.py). Default: `guidance_scale`."""
        return self.guidance_scale

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
    """Denoise B branches from the inverted noise, batched in one UNet call per step.

    cond: (B, 77, D) prompt embeddings, branch 0 being the source branch. Each step uses the inversion's per-step
    unconditional embedding (or "") for classifier-free guidance (in every branch, or the source branch only), its
    per-step conditional embedding (or the source prompt) in the source branch and, if it says so, mixed into the
    target branches, its per-level embeddings and value modulation (see InversionResult), moves the latents with
    its sampler (or guided DDIM), and adds its per-step latent offsets to the source and target branches.
    A `controller` sees every attention map (editors/attention.py) and may change the latents before each step
    (given the step's UNet evaluation, for guidance by gradient) and after it.
    `target_uncond` (1, 77, D), an editor's negative prompt, replaces the unconditional embedding of the target
    branches.
    Returns the final latents (B, 4, h, w).
    """
    branches = cond.shape[0]
    latents = inversion.noise_latent.repeat(branches, 1, 1, 1)
    timesteps = inversion.schedule.timesteps
    empty = model.encode_prompts([""])
    unconds = inversion.uncond_embeddings or [empty] * len(timesteps)
    source_only = inversion.uncond_branches == "source"
    levels = None if inversion.level_embeddings is None else LevelConditioning()
    values = None if inversion.value_modulation is None else ValueModulation()
    for state in (levels, values):
        if state is not None:
            controller = state if controller is None else ControllerGroup(state, controller)
    if controller is not None:
        controller.num_branches = branches
    control = nullcontext() if controller is None else attention_control(model.denoiser, controller, latents.shape[-1])
    with control:
        for i, t in enumerate(timesteps):
            step_cond = cond if inversion.cond_embeddings is None else _step_cond(inversion, i, cond)
            step_uncond = unconds[i].expand(branches, -1, -1)
            if source_only:
                step_uncond = torch.cat([unconds[i], empty.expand(branches - 1, -1, -1)])
            if target_uncond is not None:
                step_uncond = torch.cat([step_uncond[:1], target_uncond.expand(branches - 1, -1, -1)])
            if levels is not None:
                levels.embeddings = {
                    resolution: torch.cat([tuned, cond[1:] + (tuned - cond[:1])])
                    for resolution, tuned in inversion.level_embeddings[i].items()
                }
            if values is not None:
                values.scale, values.shift = inversion.value_modulation[i]
                values.targets = i < inversion.value_target_until
            parts = partial(model.noise_parts, t=t, cond=step_cond, uncond=step_uncond, guidance_scale=guidance_scale)
            if controller is not None:
                controller.begin_step(i)
                latents = controller.before_step(i, latents, parts)
                parts = controller.step_noise_parts(parts)
            if inversion.sampler is None:
                latents = inversion.schedule.step(classifier_free(*parts(latents), guidance_scale), t, latents)
            else:
                latents = inversion.sampler.step(i, t, latents, parts, guidance_scale)
            if inversion.latent_offsets is not None:
                latents[:1] += inversion.latent_offsets[i]
            if inversion.target_latent_offsets is not None:
                latents[1:] += inversion.target_latent_offsets[i]
            if controller is not None:
                latents = controller.end_step(i, latents)
    return latents


def _step_cond(inversion: InversionResult, step: int, cond: torch.Tensor) -> torch.Tensor:
    """Conditioning of step i when the inversion tuned the conditional embedding (see InversionResult)."""
    tuned = inversion.cond_embeddings[step]
    targets = cond[1:]
    if inversion.target_cond_weight is not None:
        weight = inversion.target_cond_weight
        targets = weight * targets + (1 - weight) * tuned
    return torch.cat([tuned, targets])
