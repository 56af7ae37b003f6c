"""pix2pix-zero (Parmar et al., "Zero-shot Image-to-Image Translation", SIGGRAPH 2023), as the PIE-Bench reference
runs it (run_editing_pix2pix_zero.py: XA_GUIDANCE 0.1, CFG 7.5; pie-bench-protocol.md §3.5).

Contract: a source branch and a target branch from the inverted noise, batched, under classifier-free guidance and
the inversion's per-step state (editors/base.py), so pix2pix-zero composes with every inversion.
- Edit direction: the target branch is conditioned on the caption's embedding plus Δ = emb(target prompt) −
  emb(source prompt). No captioner runs offline (the reference captions the image with BLIP), so the caption is the
  source prompt and the edited embedding is emb(source) + Δ, computed as the reference does.
- Cross-attention guidance (`guided_copies: per_half`, the reference): before every denoising step, the target
  latent is copied once per half of guidance and each copy takes one SGD step (learning rate
  `cross_attention_guidance`) on Σ_layers mean_{halves, heads} Σ_{queries, tokens} (M_target − M_source)², the
  distance of its cross-attention maps, in every layer, to the source branch's maps at the same step (the
  reference's reconstruction pass, here the batched source branch): the unconditional copy by the maps of the
  unconditional half, the conditional copy by those of the conditional half. The step's ε_u is evaluated at the
  unconditional copy, ε_c at the conditional one, and the step continues from the unconditional copy (the
  reference's `x_in.chunk(2)[0]`; at guidance 1 there is one copy). `guided_copies: shared` (ours, invbench's
  earlier default) moves the one latent down the gradient of the whole loss and evaluates both halves there. The
  source branch is unchanged; with identical prompts the maps agree, the gradient is zero and the target equals the
  source.
The reference's inversion (DDIM at guidance 1 with noise regularisation) and its negative prompt (the caption, for
both branches) are `inversion=pix2pix_zero`, which gives the source prompt as unconditional embedding; the editor
itself uses whatever unconditional embedding the inversion provides, so it pairs with every inversion.
The reference's images are rounded to uint8 (diffusers' numpy_to_pil), not truncated as P2P's. Proven against the
reference's code with `inversion=pix2pix_zero` (tests/test_oracle.py, benchmarks/oracle/pix2pix_zero_reference.py).
UNet evaluations: twice those of `direct` (the guidance forward, with gradients, and the step's forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from editors.base import EDITORS, Editor, EditResult, denoise_branches
from invbench.attention import AttentionController, AttentionSite
from invbench.hyperparameters import Guidance, NonNegative
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import InversionResult, NoiseParts
from pie_bench import Sample


class CrossAttentionGuidance(AttentionController):
    """Moves the target branches' latents down the gradient of their cross-attention distance to branch 0."""

    def __init__(self, learning_rate: float, model_dtype: torch.dtype, per_half: bool):
        self.learning_rate, self.model_dtype = learning_rate, model_dtype  # latents may be wider (EDICT: float64)
        self.per_half = per_half
        self.loss: torch.Tensor | None = None  # accumulated over the layers during the guidance forward
        self.cond_latents: torch.Tensor | None = None  # the conditional copy of this step (per_half)

    def wants(self, site: AttentionSite) -> bool:
        return site.is_cross and self.loss is not None

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        # probs: (halves, branches, heads, queries, tokens); the mean over halves and heads of the reference's rows
        distance = (probs[:, 1:] - probs[:, :1].detach()).pow(2).sum(dim=(-2, -1)).mean(dim=(0, 2))
        self.loss = self.loss + distance.sum()  # a sum over target branches: each gets its own gradient
        return probs

    def before_step(self, step: int, latents: torch.Tensor, noise_parts: NoiseParts) -> torch.Tensor:
        self.cond_latents = None
        if self.learning_rate == 0:
            return latents
        if not self.per_half:
            return self._guided_shared(latents, noise_parts)
        source = latents[:1]
        with torch.enable_grad():
            copies = [latents[1:].detach().requires_grad_(True) for _ in range(2)]  # unconditional, conditional
            self.loss = torch.zeros((), device=latents.device)
            uncond_half, cond_half = (torch.cat([source, copy]).to(self.model_dtype) for copy in copies)
            noise_parts(uncond_half, cond_latents=cond_half)
            loss, self.loss = self.loss, None
            gradients = torch.autograd.grad(loss, copies, allow_unused=True)  # at guidance 1: no unconditional half
        moved = [
            copy.detach() - self.learning_rate * g if g is not None else None for copy, g in zip(copies, gradients)
        ]
        if moved[0] is None:  # guidance 1: the one (conditional) copy is the latent stepped from
            return torch.cat([source, moved[1]])
        self.cond_latents = torch.cat([source, moved[1]])
        return torch.cat([source, moved[0]])

    def _guided_shared(self, latents: torch.Tensor, noise_parts: NoiseParts) -> torch.Tensor:
        with torch.enable_grad():
            targets = latents[1:].detach().requires_grad_(True)
            self.loss = torch.zeros((), device=latents.device)
            noise_parts(torch.cat([latents[:1], targets]).to(self.model_dtype))
            loss, self.loss = self.loss, None
            (gradient,) = torch.autograd.grad(loss, targets)
        return torch.cat([latents[:1], targets.detach() - self.learning_rate * gradient])

    def step_noise_parts(self, noise_parts: NoiseParts) -> NoiseParts:
        if self.cond_latents is None:
            return noise_parts
        cond_latents = self.cond_latents
        return lambda latents: noise_parts(latents, cond_latents=cond_latents.to(latents.dtype))


@EDITORS.register("pix2pix_zero")
@dataclass
class Pix2PixZero(Editor):
    families = EPSILON_UNETS
    guidance_scale: Guidance
    cross_attention_guidance: NonNegative
    guided_copies: Literal["per_half", "shared"]

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        source, target = model.encode_prompts([sample.source_prompt, sample.target_prompt])
        # the caption (:= the source prompt) plus the edit direction, in the reference's arithmetic
        cond = torch.stack([source, source + (target - source)])
        controller = CrossAttentionGuidance(
            self.cross_attention_guidance, model.dtype, self.guided_copies == "per_half"
        )
        latents = denoise_branches(model, inversion, cond, self.guidance_scale, controller)
        return EditResult(edited=latents[1:], reconstruction=latents[:1])
