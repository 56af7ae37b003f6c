"""pix2pix-zero (Parmar et al., "Zero-shot Image-to-Image Translation", SIGGRAPH 2023), as the PIE-Bench reference
runs it (run_editing_pix2pix_zero.py: XA_GUIDANCE 0.1, CFG 7.5; pie-bench-protocol.md §3.5).

Contract: a source branch and a target branch from the inverted noise, batched, under classifier-free guidance and
the inversion's per-step state (editors/base.py), so pix2pix-zero composes with every inversion.
- Edit direction: the target branch is conditioned on the caption's embedding plus Δ = emb(target prompt) −
  emb(source prompt). No captioner runs offline (the reference captions the image with BLIP), so the caption is the
  source prompt and the edited embedding is emb(source) + Δ = emb(target prompt).
- Cross-attention guidance: before every denoising step, the target latent takes one gradient step (learning rate
  `cross_attention_guidance`) on Σ_layers mean_{halves, heads} Σ_{queries, tokens} (M_target − M_source)², the
  distance of its cross-attention maps, in every layer and both halves of guidance, to the source branch's maps at
  the same step (the reference's reconstruction pass, here the batched source branch). The step is then taken from
  the guided latent. The source branch is unchanged; with identical prompts the maps agree, the gradient is zero
  and the target equals the source.
The reference's inversion (DDIM at guidance 1 with noise regularisation) and its negative prompt (the caption, for
both branches) are `inversion=pix2pix_zero`, which gives the source prompt as unconditional embedding; the editor
itself uses whatever unconditional embedding the inversion provides, so it pairs with every inversion.
Difference from the reference: it evaluates the two halves of guidance on two copies of the latent, steps both and
continues from the unconditional copy; here the one latent gets the gradient of the whole loss.
UNet evaluations: twice those of `direct` (the guidance forward, with gradients, and the step's forward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from editors.attention import AttentionController, AttentionSite
from editors.base import EDITORS, Editor, EditResult, denoise_branches
from invbench.hyperparameters import Guidance, NonNegative
from invbench.models import DiffusionModel
from inversions.base import InversionResult, NoiseParts
from pie_bench import Sample


class CrossAttentionGuidance(AttentionController):
    """Moves the target branches' latents down the gradient of their cross-attention distance to branch 0."""

    def __init__(self, learning_rate: float, model_dtype: torch.dtype):
        self.learning_rate, self.model_dtype = learning_rate, model_dtype  # latents may be wider (EDICT: float64)
        self.loss: torch.Tensor | None = None  # accumulated over the layers during the guidance forward

    def wants(self, site: AttentionSite) -> bool:
        return site.is_cross and self.loss is not None

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        # probs: (halves, branches, heads, queries, tokens); the mean over halves and heads of the reference's rows
        distance = (probs[:, 1:] - probs[:, :1].detach()).pow(2).sum(dim=(-2, -1)).mean(dim=(0, 2))
        self.loss = self.loss + distance.sum()  # a sum over target branches: each gets its own gradient
        return probs

    def before_step(self, step: int, latents: torch.Tensor, noise_parts: NoiseParts) -> torch.Tensor:
        if self.learning_rate == 0:
            return latents
        with torch.enable_grad():
            targets = latents[1:].detach().requires_grad_(True)
            self.loss = torch.zeros((), device=latents.device)
            noise_parts(torch.cat([latents[:1], targets]).to(self.model_dtype))
            loss, self.loss = self.loss, None
            (gradient,) = torch.autograd.grad(loss, targets)
        return torch.cat([latents[:1], targets.detach() - self.learning_rate * gradient])


@EDITORS.register("pix2pix_zero")
@dataclass
class Pix2PixZero(Editor):
    guidance_scale: Guidance
    cross_attention_guidance: NonNegative

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        # caption := source prompt, so caption + (target − source) is the target prompt's embedding (docstring)
        cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
        controller = CrossAttentionGuidance(self.cross_attention_guidance, model.dtype)
        latents = denoise_branches(model, inversion, cond, self.guidance_scale, controller)
        return EditResult(edited=latents[1:], reconstruction=latents[:1])
