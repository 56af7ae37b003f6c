"""Negative-prompt inversion (Miyake et al., "Negative-prompt Inversion: Fast Image Inversion for Editing with
Text-guided Diffusion Models", arXiv 2305.16807), as the PIE-Bench reference runs it (`NegativePromptInversion`,
npi_interp = 0; pie-bench-protocol.md §4).

Contract: DDIM inversion with the source prompt at guidance 1, then the unconditional embedding of classifier-free
guidance is replaced by the source prompt's embedding at every step and in every branch. The source branch then
denoises with ε(c_src) + w·0, i.e. DDIM at guidance 1, and comes back to the image up to the DDIM-inversion
approximation, at no optimisation cost; target branches are guided from c_src toward c_tgt. UNet evaluations: one per
inversion step; editing costs what the editor costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from invbench.hyperparameters import Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult, UnconditionalEmbeddings
from inversions.ddim import DDIMInversion
from pie_bench import Sample


@INVERSIONS.register("npi")
@dataclass
class NegativePromptInversion(Inversion):
    families = EPSILON_UNETS
    produces = frozenset({"conditioning"})

    num_steps: Steps
    batches = True

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        return self.invert_batch(model, [image_latent], [sample])[0]

    @torch.no_grad()
    def invert_batch(
        self, model: DiffusionModel, image_latents: Sequence[torch.Tensor], samples: Sequence[Sample]
    ) -> list[InversionResult]:
        pivots = DDIMInversion(self.num_steps, 1.0).invert_batch(model, image_latents, samples)
        for pivot, sample in zip(pivots, samples, strict=True):
            source = model.encode_prompts([sample.source_prompt])
            pivot.hooks = UnconditionalEmbeddings([source] * self.num_steps)
        return pivots
