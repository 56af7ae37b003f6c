"""DirectInversion, "PnP Inversion" (Ju et al., "PnP Inversion: Boosting Diffusion-based Editing with 3 Lines of
Code", ICLR 2024 — the PIE-Bench paper), as its reference runs it (`DirectInversion.offset_calculate`,
`direct_inversion_p2p_guidance_forward`; pie-bench-protocol.md §4).

Contract: DDIM inversion with the source prompt at `inversion_guidance_scale` (reference 1: conditional only) gives
z*_0..z*_T. Then, from z = z*_T, for each denoising step i: one classifier-free-guided DDIM step at
`edit_guidance_scale` (the guidance the editor will use; "" as the unconditional embedding) gives z_rec, the offset
o_i = z*_{t−Δ} − z_rec is stored, and z is reset to z*_{t−Δ}. Editing adds o_i to the source branch after step i, so
the source branch retraces z*_t exactly while the target branches read its attention (the method's "3 lines").
The reference's ablations are options: `offset_scale` (0.4 / 0.8: the source branch then drifts from the
partially corrected latent), `offset_interval` (keep o_i only where i % k == 0), `offset_branches` ("source" as the
reference, "source_and_target": each target branch also gets the offset of its own prompt's guided step —
add-target —, "source_to_all": the source offset is added to the targets too — add-source), and the guidance
grid (`inversion_guidance_scale` × `edit_guidance_scale`, the reference's guidance_{i}_{f}).
UNet evaluations: N for the inversion (2N at inversion guidance > 1) plus 2N for the offsets (2 per branch whose
offset is needed, per step, at edit guidance > 1). The reference also computes the unused target offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from invbench.hyperparameters import Guidance, NonNegative, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult, StepHooks
from inversions.ddim import DDIMInversion
from pie_bench import Sample


@dataclass
class LatentOffsets(StepHooks):
    """After denoising step i, the source branch moves by `source[i]` back onto the inversion trajectory, and every
    target branch by `targets[i]` where the ablation adds them there (None: targets keep their latents)."""

    source: list[torch.Tensor]
    targets: list[torch.Tensor] | None

    def after_step(self, i, latents):
        latents[:1] += self.source[i]
        if self.targets is not None:
            latents[1:] += self.targets[i]
        return latents


@INVERSIONS.register("directinversion")
@dataclass
class DirectInversion(Inversion):
    families = EPSILON_UNETS
    produces = frozenset({"after_step"})
    num_steps: Steps
    inversion_guidance_scale: Guidance
    edit_guidance_scale: Guidance
    offset_scale: NonNegative
    offset_interval: Steps
    offset_branches: Literal["source", "source_and_target", "source_to_all"]

    guidance_key = "edit_guidance_scale"

    def tuned_for_guidance(self) -> float | None:
        return self.edit_guidance_scale

    batches = True

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        return self.invert_batch(model, [image_latent], [sample])[0]

    @torch.no_grad()
    def invert_batch(
        self, model: DiffusionModel, image_latents: Sequence[torch.Tensor], samples: Sequence[Sample]
    ) -> list[InversionResult]:
        pivots = DDIMInversion(self.num_steps, self.inversion_guidance_scale).invert_batch(
            model, image_latents, samples
        )
        schedule = pivots[0].schedule
        per_sample = 2 if self.offset_branches == "source_and_target" else 1  # rows: source (, target) per sample
        prompts = [prompt for s in samples for prompt in (s.source_prompt, s.target_prompt)[:per_sample]]
        cond = model.encode_prompts(prompts)
        uncond = model.encode_prompts([""] * len(prompts))
        offsets: list[torch.Tensor] = []
        for i, t in enumerate(schedule.timesteps):
            on_pivot = torch.cat([p.latents[self.num_steps - i].expand(per_sample, -1, -1, -1) for p in pivots])
            landed = schedule.step(
                model.guided_noise(on_pivot, t, cond, uncond, self.edit_guidance_scale), t, on_pivot
            )
            goal = torch.cat([p.latents[self.num_steps - i - 1].expand(per_sample, -1, -1, -1) for p in pivots])
            keep = self.offset_scale if i % self.offset_interval == 0 else 0.0
            offsets.append(keep * (goal - landed))
        for k, pivot in enumerate(pivots):
            own = [offset[k * per_sample : (k + 1) * per_sample].clone() for offset in offsets]
            source = [offset[:1] for offset in own]
            targets = {"source": None, "source_and_target": [offset[1:] for offset in own], "source_to_all": source}
            pivot.hooks = LatentOffsets(source, targets[self.offset_branches])
            pivot.info = {"offset_guidance_scale": self.edit_guidance_scale}
        return pivots
