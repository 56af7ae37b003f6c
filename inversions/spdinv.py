"""Source Prompt Disentangled Inversion (SPDInv; Li et al., ECCV 2024, seed 001; reference P2P/SPDInv.py).

Contract: DDIM inversion with the source prompt (no guidance) in which every step's output z_t is refined into a
fixed point of that step: starting from the plain DDIM-inversion estimate, z_t is optimised with AdamW
(`learning_rate`, at most `inner_steps` rounds, stopping once the loss is below `threshold`) to minimise
‖z_t − DDIM⁻¹(z_{t−Δ}; ε(z_t, t, c_src))‖², i.e. the gap between the noise predicted at z_t and the noise used to
reach it. As in the reference, editing then uses the source prompt's embedding as the unconditional embedding of
every branch (`source_as_uncond`, the Negative-Prompt-Inversion trick the SPDInv code applies), so the source branch
follows the conditional DDIM trajectory the fixed points make exact.
Editing, as the official run_SPDInv_P2P.py (P2P/ptp_utils.py's diffusion_step with editing_p2p's arguments):
proximal guidance in every step — δ = ε_c − ε_u soft-thresholded at τ, the 0.7 quantile of |δ| over the whole batch
(its "l0": δ − clamp(δ, ±τ)) — and, below t = 400, inversion guidance: the elements outside the edited region
(where what the threshold kept exceeds τ, dilated by one latent pixel) are pulled onto the SPDInv trajectory with
strength 1 (its reconstruction guidance is inert: no image latent is passed). The same step as ProxEdit's reference
(inversions/proxedit.py). `proximal_guidance: false` (conf/inversion/spdinv_plain.yaml, ours) edits with plain
guided DDIM instead.
UNet evaluations per step: 1 (inversion estimate) + one per round (with backward); editing as the editor's, the
proximal step needing the unconditional half at any guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from invbench.hyperparameters import Count, NonNegative, Positive, Range, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, CombinedHooks, Inversion, InversionResult, UnconditionalEmbeddings, optimise
from inversions.proxedit import ProximalSampler, ProximalSettings
from pie_bench import Sample


@INVERSIONS.register("spdinv")
@dataclass
class SourcePromptDisentangledInversion(Inversion):
    families = EPSILON_UNETS
    num_steps: Steps
    inner_steps: Count
    learning_rate: Positive
    threshold: NonNegative
    source_as_uncond: bool
    proximal_guidance: bool
    quantile: Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]
    recon_t: Count
    recon_lr: NonNegative

    def state(self) -> frozenset[str]:
        state = {"conditioning"} if self.source_as_uncond else set()
        return frozenset(state | ({"step"} if self.proximal_guidance else set()))

    def needs_unconditional_half(self) -> bool:
        return self.proximal_guidance  # the proximal step thresholds ε_c − ε_u

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        schedule = model.schedule(self.num_steps)
        source = model.encode_prompts([sample.source_prompt])
        trajectory, rounds = [image_latent], []
        for t in reversed(schedule.timesteps):
            previous = trajectory[-1]
            with torch.no_grad():
                estimate = schedule.inverse_step(model.predict_noise(previous, t, source), t, previous)
            latent = estimate.clone().requires_grad_(True)
            taken = optimise(
                torch.optim.AdamW([latent], lr=self.learning_rate),
                lambda: F.mse_loss(latent, schedule.inverse_step(model.predict_noise(latent, t, source), t, previous)),
                self.inner_steps,
                self.threshold,
            )
            trajectory.append(latent.detach())
            rounds.append(taken)
        hooks = [UnconditionalEmbeddings([source] * self.num_steps)] if self.source_as_uncond else []
        if self.proximal_guidance:
            settings = ProximalSettings(
                prox="l0",
                operators="reference",
                quantile=self.quantile,
                quantile_scope="batch",
                recon_lr=self.recon_lr,
                recon_t=self.recon_t,
                dilate_mask=1,
                reconstruction_guidance=False,
                inversion_guidance=True,
            )
            hooks.append(ProximalSampler(trajectory, settings))
        return InversionResult(
            schedule=schedule,
            latents=trajectory,
            hooks=CombinedHooks(*hooks),
            info={"optimisation_steps": sum(rounds), "optimisation_steps_per_timestep": rounds[::-1]},
        )
