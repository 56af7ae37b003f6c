"""No inversion: the "no-edit" baseline of the PIE-Bench background metrics.

Contract: the trajectory is z_0 alone on an empty timestep grid, so every editor returns the VAE encode→decode of
the source for both branches without a UNet evaluation. Scored against the source, its row is the upper bound any
method can reach on the unedited-region metrics with this VAE (the VAE's own reconstruction loss), and its CLIP
columns are those of the unedited image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invbench.models import EPSILON_UNETS, FLOW_TRANSFORMERS, DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult
from pie_bench import Sample


@INVERSIONS.register("none")
@dataclass
class NoInversion(Inversion):
    families = EPSILON_UNETS | FLOW_TRANSFORMERS

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        return InversionResult(schedule=model.schedule(0), latents=[image_latent])
