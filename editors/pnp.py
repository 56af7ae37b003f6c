"""Plug-and-Play (Tumanyan et al., "Plug-and-Play Diffusion Features for Text-Driven Image-to-Image Translation",
CVPR 2023), as the PIE-Bench reference runs it (run_editing_pnp.py: pnp_f_t 0.8, pnp_attn_t 0.5, its layer choice
and negative prompt; pie-bench-protocol.md §3.4).

Contract: a source branch and a target branch from the inverted noise, batched, under classifier-free guidance and
the inversion's per-step state (editors/base.py), so PnP composes with every inversion. In the target branch:
- feature injection: for the first `feature_steps` of the steps, the output of the ResNet block `feature_block`
  (SD: up_blocks.1.resnets.1) is the source branch's;
- self-attention injection: for the first `attention_steps` of the steps, the self-attention layers of
  `attention_blocks` use the source branch's queries and keys, i.e. its attention maps (values stay the target's);
- its unconditional embedding is `negative_prompt`.
Both injections act in both halves of guidance, as the reference feeds the source features to each. The source
branch is unchanged. Differences from the reference: its source branch is DDIM-inverted and denoised with the ""
prompt; here the sample's source prompt is kept, so that every inversion's state applies; and its DDIM variant
feeds the target a one-step-shifted source latent (an off-by-one noted in the protocol), which is not reproduced.
UNet evaluations as `direct`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from editors.attention import AttentionController, AttentionSite, copy_source_rows
from editors.base import EDITORS, Editor, EditResult, denoise_branches
from invbench.errors import ConfigError
from invbench.hyperparameters import Fraction, Guidance
from invbench.models import DiffusionModel
from inversions.base import InversionResult
from pie_bench import Sample

log = logging.getLogger(__name__)


class SourceInjection(AttentionController):
    """Target self-attention maps := the source's in `blocks` before step `attention_until`; the ResNet feature
    hook reads `feature_until` and the current step from here."""

    def __init__(self, blocks: tuple[str, ...], attention_until: int, feature_until: int):
        self.blocks, self.attention_until, self.feature_until = blocks, attention_until, feature_until

    def wants(self, site: AttentionSite) -> bool:
        return not site.is_cross and site.name.startswith(self.blocks)

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        if self.step >= self.attention_until:
            return probs
        return probs[:, :1].expand_as(probs).clone()

    @contextmanager
    def feature_hook(self, module: torch.nn.Module) -> Iterator[None]:
        def inject(_module, _inputs, output):
            return copy_source_rows(output, self.num_branches) if self.step < self.feature_until else output

        handle = module.register_forward_hook(inject)
        try:
            yield
        finally:
            handle.remove()


@EDITORS.register("pnp")
@dataclass
class PlugAndPlay(Editor):
    guidance_scale: Guidance
    feature_steps: Fraction
    attention_steps: Fraction
    feature_block: str
    attention_blocks: list[str]
    negative_prompt: str

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        modules = dict(model.unet.named_modules())
        if self.feature_block not in modules:
            raise ConfigError(
                f"conf/editor/pnp.yaml: feature_block '{self.feature_block}' is not a module of this UNet"
            )
        num_steps = len(inversion.schedule.timesteps)
        blocks = tuple(f"{block}." for block in self.attention_blocks)
        controller = SourceInjection(
            blocks, int(self.attention_steps * num_steps), int(self.feature_steps * num_steps)
        )
        cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
        negative = model.encode_prompts([self.negative_prompt])
        with controller.feature_hook(modules[self.feature_block]):
            latents = denoise_branches(model, inversion, cond, self.guidance_scale, controller, target_uncond=negative)
        return EditResult(edited=latents[1:], reconstruction=latents[:1])
