"""Plug-and-Play (Tumanyan et al., "Plug-and-Play Diffusion Features for Text-Driven Image-to-Image Translation",
CVPR 2023), as the PIE-Bench reference runs it (PnPInversion's run_editing_pnp.py, `ddim+pnp` and
`directinversion+pnp`: pnp_f_t 0.8, pnp_attn_t 0.5, its layers, its negative prompt, SD's scheduler grid).

Contract, in two passes over the inversion's schedule:
1. Source pass: the source branch alone, denoised from the inverted noise with the source prompt at the source
   guidance (the reference: 1, its DDIM reconstruction; `source_guidance_scale: null` keeps 1 for a plain
   trajectory and uses the editor's guidance where the inversion carries state tuned for it, e.g. NTI's nulls or
   DirectInversion's offsets), honouring the inversion's per-step state (editors/base.py). Its end is the
   reconstruction.
2. Target pass: a feature branch pinned, at every step, to a latent of the source pass and conditioned on
   `feature_prompt` (the reference's ""), and the target branch (target prompt; `negative_prompt` as its
   unconditional embedding) under classifier-free guidance. For the first `feature_steps` of the steps the residual
   branch of the ResNet block `feature_block` (its conv2 output, before the skip connection is added: the target
   keeps its own skip) is the feature branch's; for the first `attention_steps` the self-attention maps of
   `attention_blocks` are the feature branch's (its queries and keys; values stay the target's). Both halves of the
   target's guidance receive the same features, those of the feature branch's conditional row, as the reference
   feeds its one "" row to both.
Which source-pass latent feeds step i (`feature_latents`): `reference` reproduces the reference script, which
passes `ddim+pnp` its reconstruction list shifted by one (step i reads the latent *after* step i, noised for the
step before, and the target starts from the latent after the first step instead of the inverted noise) and
`directinversion+pnp` the inversion trajectory itself (step i reads the latent entering it, which
DirectInversion's offsets make the source pass retrace); so: shifted for a plain source pass, aligned where the
inversion adds latent offsets. `aligned` (conf/editor/pnp_aligned.yaml, ours) feeds every method the latent
entering step i, as the official PnP code does.
UNet evaluations per step: the source pass (1 at guidance 1, 2 under guidance) plus 4 in the target pass (the
feature branch is evaluated in both halves of the guided batch; the reference evaluates it once): ddim at 50 steps,
50 + 200, where the reference needs 50 + 150.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

from editors.base import EDITORS, Editor, EditResult, denoise_branches
from invbench.attention import AttentionController, AttentionSite
from invbench.errors import ConfigError
from invbench.hyperparameters import Fraction, Guidance
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import InversionResult
from pie_bench import Sample


class SourcePassRecorder(AttentionController):
    """Keeps the source pass's latent entering every step and the last one."""

    def __init__(self, start: torch.Tensor) -> None:
        self.latents: list[torch.Tensor] = []
        self.final = start  # the reconstruction when there is no step to take (inversion=none)

    def wants(self, site: AttentionSite) -> bool:
        return False

    def before_step(self, step, latents, noise_parts):
        self.latents.append(latents[:1].clone())
        return latents

    def end_step(self, step, latents):
        self.final = latents[:1].clone()
        return latents


class FeatureInjection(AttentionController):
    """Pins branch 0 to `feature_latents[i]` and gives every other row of the batch branch 0's conditional-half
    self-attention maps (in `blocks`, before step `attention_until`) and ResNet residual (before `feature_until`).
    `target_start`, if given, replaces the target branches' latent before the first step."""

    def __init__(
        self,
        feature_latents: list[torch.Tensor],
        blocks: tuple[str, ...],
        attention_until: int,
        feature_until: int,
        target_start: torch.Tensor | None = None,
    ):
        self.feature_latents, self.blocks = feature_latents, blocks
        self.attention_until, self.feature_until = attention_until, feature_until
        self.target_start = target_start

    def before_step(self, step, latents, noise_parts):
        latents = latents.clone()
        latents[:1] = self.feature_latents[step]
        if step == 0 and self.target_start is not None:
            latents[1:] = self.target_start
        return latents

    def wants(self, site: AttentionSite) -> bool:
        return not site.is_cross and site.name.startswith(self.blocks)

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        if self.step >= self.attention_until:
            return probs
        # (halves, branches, heads, queries, keys): every other branch takes the conditional half's branch 0, in place
        # (the maps at SD's 64² layers are 3 GB at 512²: a copy added as much again to the edit's peak memory)
        probs[:, 1:] = probs[-1, 0]
        return probs

    @contextmanager
    def residual_hook(self, conv2: torch.nn.Module) -> Iterator[None]:
        def inject(_module, _inputs, output):
            if self.step >= self.feature_until:
                return output
            rows = output.view(-1, self.num_branches, *output.shape[1:])
            injected = rows.clone()
            injected[:, 1:] = rows[-1, 0]
            return injected.view_as(output)

        handle = conv2.register_forward_hook(inject)
        try:
            yield
        finally:
            handle.remove()


@EDITORS.register("pnp")
@dataclass
class PlugAndPlay(Editor):
    families = EPSILON_UNETS
    guidance_scale: Guidance
    source_guidance_scale: Guidance | None
    feature_prompt: str
    feature_latents: Literal["reference", "aligned"]
    feature_steps: Fraction
    attention_steps: Fraction
    feature_block: str
    attention_blocks: list[str]
    negative_prompt: str

    def source_guidance(self, state: frozenset[str]) -> float:
        if self.source_guidance_scale is not None:
            return self.source_guidance_scale
        return self.guidance_scale if state else 1.0  # state is tuned for (or its sampler needs) the guidance

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        conv2 = dict(model.denoiser.named_modules()).get(f"{self.feature_block}.conv2")
        if conv2 is None:
            raise ConfigError(
                f"editor.feature_block='{self.feature_block}' is not a ResNet block of this UNet (conf/editor/pnp.yaml):"
                " name one with a conv2, e.g. up_blocks.1.resnets.1"
            )
        source = SourcePassRecorder(inversion.noise_latent)
        source_cond = model.encode_prompts([sample.source_prompt])
        denoise_branches(model, inversion, source_cond, self.source_guidance(inversion.state()), source)
        num_steps = len(inversion.schedule.timesteps)
        trajectory = source.latents + [source.final]  # s_0 (the inverted noise) .. s_N (the reconstruction)
        shifted = self.feature_latents == "reference" and "after_step" not in inversion.state()
        features = trajectory[1:] if shifted else trajectory[:-1]
        controller = FeatureInjection(
            features,
            tuple(f"{block}." for block in self.attention_blocks),
            int(self.attention_steps * num_steps),
            int(self.feature_steps * num_steps),
            target_start=features[0] if shifted and features else None,  # the script starts its target there too
        )
        cond = model.encode_prompts([self.feature_prompt, sample.target_prompt])
        negative = model.encode_prompts([self.negative_prompt])
        with controller.residual_hook(conv2):
            latents = denoise_branches(model, inversion, cond, self.guidance_scale, controller, target_uncond=negative)
        return EditResult(
            edited=latents[1:],
            reconstruction=source.final,
            info={"features_shifted": shifted, "source_guidance": self.source_guidance(inversion.state())},
        )
