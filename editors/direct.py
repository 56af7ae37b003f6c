"""DDIM-Edit ("direct"): denoise the inverted noise with the target prompt under classifier-free guidance, without
any attention control (the plain baseline of Hertz et al., "Prompt-to-Prompt Image Editing with Cross Attention
Control", ICLR 2023, and of the PIE-Bench tables).

Contract: two branches from the same inverted noise, batched: the source branch (source prompt; its output is the
reconstruction) and the target branch (target prompt; the edit). Both use the same guidance scale and the inversion's
per-step state. With identical prompts the two branches are identical. 2 UNet evaluations per branch per step at
guidance > 1 (1 at guidance 1). Batches: several samples' branches go through the denoiser together, one call per
step, where their inversions' hooks act per sample (`editors.base.batchable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from editors.base import EDITORS, Editor, EditResult, denoise_branches, edit_samples_together
from invbench.hyperparameters import Guidance
from invbench.models import EPSILON_UNETS, FLOW_TRANSFORMERS, DiffusionModel
from inversions.base import InversionResult
from pie_bench import Sample


@EDITORS.register("direct")
@dataclass
class DirectEditor(Editor):
    families = EPSILON_UNETS | FLOW_TRANSFORMERS  # the plain guided step of the model's own schedule: Euler on flows
    guidance_scale: Guidance
    batches = True

    def edit_together(
        self, model: DiffusionModel, inversions: Sequence[InversionResult], samples: Sequence[Sample]
    ) -> list[EditResult]:
        return edit_samples_together(model, inversions, samples, self.guidance_scale)

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
        latents = denoise_branches(model, inversion, cond, self.guidance_scale)
        return EditResult(edited=latents[1:], reconstruction=latents[:1])
