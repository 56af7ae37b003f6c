"""FlowEdit (Kulikov et al., "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models", ICCV 2025;
official code fallenshock/FlowEdit, FlowEdit_utils.py `FlowEditSD3` / `FlowEditFLUX`, settings SD3_exp.yaml and
FLUX_exp.yaml).

Contract: inversion-free. From z = x_src (the source latent; pair with `inversion=none`), over the last `n_max` of the
T steps of the model's grid (skipping the first T − n_max), each step draws noise ε, builds the noisy source
z_src = (1 − σ_i) x_src + σ_i ε and the matching target point z_tar = z + z_src − x_src, and moves
z ← z + (σ_{i+1} − σ_i) · mean over `n_avg` draws of [v(z_tar, c_tar; w_tar) − v(z_src, c_src; w_src)]. The last
`n_min` steps instead sample the target from its noised point (SDEdit-style; 0 in the reference runs). With
identical prompts and guidance scales every difference is zero and the source latent comes back unchanged.
Guidance: classifier-free on SD3 ("" as the negative prompt), the embedded guidance on FLUX.1-dev.
Noise: drawn from the job's per-sample seed (the reference seeds once per run), packed on FLUX as the reference.
The reconstruction this editor reports is the source latent itself (there is no source branch): its background
columns measure the edit against the VAE round trip.
Cost per sample: (n_max − n_min) · n_avg · 2 evaluations (doubled by classifier-free guidance on SD3) + n_min.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editors.base import EDITORS, Editor, EditResult
from invbench.hyperparameters import Count, Guidance, Steps
from invbench.models import FLOW_TRANSFORMERS, DiffusionModel
from inversions.base import InversionResult
from pie_bench import Sample


@EDITORS.register("flowedit")
@dataclass
class FlowEditEditor(Editor):
    families = FLOW_TRANSFORMERS
    uses = frozenset()  # it takes no inversion state: only the source latent of inversion=none
    pairs_with = frozenset({"none"})  # inversion-free
    num_steps: Steps  # T
    n_max: Count
    n_min: Count
    n_avg: Steps
    source_guidance_scale: Guidance
    guidance_scale: Guidance  # the target's

    def source_guidance(self, state: frozenset[str]) -> float:
        return self.source_guidance_scale

    @torch.no_grad()
    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        source = inversion.latents[0]
        schedule = model.schedule(self.num_steps)
        empty, source_cond, target_cond = model.encode_prompts(["", sample.source_prompt, sample.target_prompt])
        empty, source_cond, target_cond = empty[None], source_cond[None], target_cond[None]
        edited, sampled = source.clone(), None
        for i, t in enumerate(schedule.timesteps):
            if self.num_steps - i > self.n_max:
                continue
            sigma, next_sigma = schedule.sigma(t), schedule.next_sigma(t)
            if self.num_steps - i > self.n_min:
                difference = torch.zeros_like(source)
                for _ in range(self.n_avg):
                    noisy_source = (1 - sigma) * source + sigma * model.noise_like(source)
                    noisy_target = edited + noisy_source - source
                    target_velocity = model.guided_noise(noisy_target, t, target_cond, empty, self.guidance_scale)
                    source_velocity = model.guided_noise(
                        noisy_source, t, source_cond, empty, self.source_guidance_scale
                    )
                    difference += (target_velocity - source_velocity) / self.n_avg
                edited = (edited.float() + (next_sigma - sigma) * difference).to(source.dtype)
            else:  # the last n_min steps: plain sampling of the target from its noised point
                if sampled is None:
                    noisy_source = (1 - sigma) * source + sigma * model.noise_like(source)
                    sampled = edited + noisy_source - source
                velocity = model.guided_noise(sampled, t, target_cond, empty, self.guidance_scale)
                sampled = (sampled.float() + (next_sigma - sigma) * velocity).to(source.dtype)
        result = edited if sampled is None else sampled
        return EditResult(edited=result, reconstruction=source)
