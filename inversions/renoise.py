"""ReNoise (Garibi et al., "ReNoise: Real Image Inversion Through Iterative Noising", ECCV 2024).

Contract: each DDIM-inversion step (source prompt, guidance 1) first takes the DDIM guess z_t^0 = g(z_{t−Δ}) with
g(z) = DDIM⁻¹(z_{t−Δ}; ε(z, t, c_src)), then "renoises" `renoise_steps` times: ε_k = ε(z_t^{k−1}, t, c_src),
z_t^k = DDIM⁻¹(z_{t−Δ}; ε_k). The step's final latent uses the average of the noise predictions ε_k of the
iterations k ≥ `average_from` (1-based): z_t = DDIM⁻¹(z_{t−Δ}; mean ε_k), ReNoise's averaging that damps the
oscillation of late iterations. (ReNoise's optional noise regularisation for non-deterministic samplers is not
used: our sampler is deterministic DDIM.) A plain trajectory, edited with guided DDIM. UNet evaluations per step:
1 + renoise_steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invbench.errors import ConfigError
from invbench.hyperparameters import Steps
from invbench.models import DiffusionModel
from inversions.base import INVERSIONS, Inversion, InversionResult
from inversions.fixed_point import invert_solving_each_step
from pie_bench import Sample


@INVERSIONS.register("renoise")
@dataclass
class ReNoiseInversion(Inversion):
    num_steps: Steps
    renoise_steps: Steps
    average_from: Steps

    def __post_init__(self) -> None:
        if self.average_from > self.renoise_steps:
            raise ConfigError(
                f"inversion.average_from={self.average_from} must be at most inversion.renoise_steps="
                f"{self.renoise_steps} (conf/inversion/renoise.yaml): it is the first iterate averaged"
            )

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        def solve(g, latent):
            averaged = []
            for k in range(1, self.renoise_steps + 1):
                latent = g(latent)
                if k >= self.average_from:
                    averaged.append(latent)
            # DDIM⁻¹ is affine in ε, so averaging the latents equals stepping with the averaged noise
            return torch.stack(averaged).mean(dim=0), self.renoise_steps

        return invert_solving_each_step(model, image_latent, sample, self.num_steps, solve)
