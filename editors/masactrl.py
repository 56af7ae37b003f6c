"""MasaCtrl (Cao et al., "MasaCtrl: Tuning-Free Mutual Self-Attention Control for Consistent Image Synthesis and
Editing", ICCV 2023), as the PIE-Bench reference runs it (`MutualSelfAttentionControl(start_step=4,
start_layer=10)`, CFG 7.5; pie-bench-protocol.md §3.3).

Contract: a source branch and a target branch from the inverted noise, batched, under classifier-free guidance and
the inversion's per-step state (editors/base.py), so MasaCtrl composes with every inversion. From denoising step
`start_step` on, in the self-attention of the transformer blocks numbered `start_layer` and above (in the order
the UNet runs them: SD v1.x has 16, so 10..15 are the decoder's two highest-resolution blocks), every branch reads
its keys and values from the source branch's features: the target's queries attend to the source's content (mutual
self-attention), in both halves of guidance; the source branch is unchanged. Cross-attention is untouched. With
identical prompts the target equals the source. UNet evaluations as `direct`.
Source prompt: the reference (run_editing_masactrl.py) inverts and reconstructs with "" (`source_prompt: empty`,
the default): the inversion and the source branch both see "", so the source branch reconstructs and the target
reads undrifted features. `source_prompt: sample` (conf/editor/masactrl_source_prompt.yaml, not the reference)
keeps the sample's source prompt in both.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from editors.base import EDITORS, Editor, EditResult, denoise_branches, edit_samples_together
from invbench.attention import AttentionController, AttentionSite, attention_sites, copy_source_rows, forward_order
from invbench.hyperparameters import Count, Guidance
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import InversionResult
from pie_bench import Sample

log = logging.getLogger(__name__)


class MutualSelfAttention(AttentionController):
    """Self-attention of the `layers` reads keys and values from branch 0 from step `start_step` on."""

    def __init__(self, layers: set[str], start_step: int):
        self.layers, self.start_step = layers, start_step

    def wants(self, site: AttentionSite) -> bool:
        return False  # keys and values change; the attention maps are not edited

    def context(self, site: AttentionSite, context: torch.Tensor) -> torch.Tensor:
        if site.is_cross or site.name not in self.layers or self.step < self.start_step:
            return context
        return copy_source_rows(context, self.num_branches)


@EDITORS.register("masactrl")
@dataclass
class MasaCtrl(Editor):
    families = EPSILON_UNETS
    guidance_scale: Guidance
    start_step: Count
    start_layer: Count
    source_prompt: Literal["empty", "sample"]

    def prepare_sample(self, sample: Sample) -> Sample:
        return dataclasses.replace(sample, source_prompt="") if self.source_prompt == "empty" else sample

    batches = True

    def controlled_layers(self, model: DiffusionModel, latent_size: int) -> set[str]:
        blocks = [s for s in forward_order(attention_sites(model.denoiser, latent_size)) if not s.is_cross]
        layers = {site.name for site in blocks[self.start_layer :]}
        if not layers:
            log.warning("masactrl: this UNet has %d transformer blocks; none is at start_layer=%d or above, so "
                        "nothing is controlled", len(blocks), self.start_layer)  # fmt: skip
        return layers

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        layers = self.controlled_layers(model, inversion.noise_latent.shape[-1])
        cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
        controller = MutualSelfAttention(layers, self.start_step)
        latents = denoise_branches(model, inversion, cond, self.guidance_scale, controller)
        return EditResult(edited=latents[1:], reconstruction=latents[:1], info={"controlled_layers": len(layers)})

    def edit_together(
        self, model: DiffusionModel, inversions: Sequence[InversionResult], samples: Sequence[Sample]
    ) -> list[EditResult]:
        """Several samples in one denoiser call per step, each target reading its own source's keys and values."""
        layers = self.controlled_layers(model, inversions[0].noise_latent.shape[-1])
        controllers = [MutualSelfAttention(layers, self.start_step) for _ in samples]
        infos = [{"controlled_layers": len(layers)} for _ in samples]
        return edit_samples_together(model, inversions, samples, self.guidance_scale, controllers, infos)
