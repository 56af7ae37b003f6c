"""Prompt-to-Prompt (Hertz et al., "Prompt-to-Prompt Image Editing with Cross Attention Control", ICLR 2023), as the
PIE-Bench reference runs it (run_editing_p2p.py; pie-bench-protocol.md §3.2).

Contract: two branches from the inverted noise, batched: the source branch (source prompt; the reconstruction) and
the target branch (target prompt; the edit), both under classifier-free guidance and the inversion's per-step state
(editors/base.py), so P2P composes with every inversion. In the conditional half of the target branch:
- cross-attention: for the first `cross_replace_steps` of the steps (int(fraction · (steps + 1)), as P2P counts),
  target token j takes the source branch's map of its aligned token — `replace` (word swap: same words and tokens
  per word, token i reads token i) or `refine` (global alignment of the token sequences; tokens new in the target
  keep their own maps); `auto` picks replace when the prompts allow it. The reference always uses refine;
- re-weighting: inside that window the target blended word's maps are multiplied by `reweight` (×2 reference);
- self-attention: for the first `self_replace_steps` of the steps, layers whose queries are at most
  `self_replace_max_resolution`² take the source branch's maps;
- local blend: from step int(blend_start · steps) + 1 on, the target latent keeps the source latent outside the
  region where the blended words attend (cross maps at 1/4 of the latent side, summed over steps, max-pooled 3×3,
  normalised, > blend_threshold; source word's region ∪ target word's region). The target's maps are recorded after
  the edit (replacement and re-weighting), as the reference's store holds a view that the edit overwrites.
A blended word that is not in its prompt behaves as in the reference (its token weights are all zero, so its region
is empty), with a warning and a note in the row: target word missing → the target blends with the source word's
region and is not re-weighted; source word missing → the target word's region, re-weighted; both missing → from the
first blend step the target is the source (no edit). Words are found as the reference finds them
(editors/prompt_tokens.py).
Where the inversion lays the source branch's conditioning out in the target prompt's tokens (PTI:
InversionResult.source_tokens), the branches are aligned token for token and the blend's source region is the
target word's.
With identical prompts the target branch equals the source branch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F

from editors.base import EDITORS, Editor, EditResult, denoise_branches, edit_samples_together
from editors.prompt_tokens import (
    MAX_TOKENS,
    refinement_mapper,
    replacement_mapper,
    swap_compatible,
    token_positions,
    words_beyond_limit,
)
from invbench.attention import AttentionController, AttentionSite
from invbench.errors import InvbenchError
from invbench.hyperparameters import Fraction, Guidance, NonNegative, Steps
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import InversionResult
from pie_bench import Sample

log = logging.getLogger(__name__)


class LocalBlend:
    """Prompt-to-Prompt's local blend: x_target = x_source + mask · (x_target − x_source)."""

    def __init__(self, word_weights: torch.Tensor, start_step: int, threshold: float, map_resolution: int):
        self.word_weights = word_weights  # (branches, 77): 1 at the blended word's tokens of each branch's prompt
        self.start_step, self.threshold, self.map_resolution = start_step, threshold, map_resolution
        self.summed_maps: dict[AttentionSite, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None  # the last mask applied, (branches, 1, h, w)

    def uses(self, site: AttentionSite) -> bool:
        return site.is_cross and site.place != "mid" and site.resolution == self.map_resolution

    def record(self, site: AttentionSite, cond_maps: torch.Tensor) -> None:
        """cond_maps: (branches, heads, queries, 77) of the conditional half; summed over steps, head-averaged."""
        maps = cond_maps.mean(dim=1)
        self.summed_maps[site] = self.summed_maps[site] + maps if site in self.summed_maps else maps

    def __call__(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        if step + 1 <= self.start_step or not self.summed_maps:
            return latents
        maps = torch.stack(list(self.summed_maps.values()), dim=1)  # (branches, layers, queries, 77)
        weights = self.word_weights.to(maps)[:, None, None, :]
        side = self.map_resolution
        region = (maps * weights).sum(-1).mean(1).reshape(-1, 1, side, side)
        region = F.max_pool2d(region, 3, stride=1, padding=1)
        region = F.interpolate(region, size=latents.shape[-2:])
        region = region / region.amax(dim=(2, 3), keepdim=True)
        mask = region > self.threshold
        self.mask = mask[:1] | mask
        return latents[:1] + self.mask.to(latents) * (latents - latents[:1])


class PromptToPromptControl(AttentionController):
    def __init__(
        self,
        refine: tuple[torch.Tensor, torch.Tensor] | None,
        replace: torch.Tensor | None,
        cross_replace_until: int,
        self_replace_until: int,
        self_replace_max_resolution: int,
        token_scale: torch.Tensor | None,
        local_blend: LocalBlend | None,
        uncond_self_replace_until: int = 0,
        fused_outside_windows: bool = False,
    ):
        self.fused_outside_windows = fused_outside_windows
        self.refine = refine  # (mapper, alphas) of refinement, or None for a word swap by `replace`
        self.replace = replace  # (77, 77) word-swap mapper: target token n reads Σ_w source_w · replace[w, n]
        self.cross_replace_until, self.self_replace_until = cross_replace_until, self_replace_until
        self.uncond_self_replace_until = uncond_self_replace_until
        self.self_replace_max_resolution = self_replace_max_resolution
        self.token_scale = token_scale  # (77,) re-weighting of target tokens, or None
        self.local_blend = local_blend

    def wants(self, site: AttentionSite) -> bool:
        """Every cross layer and every self layer up to the resolution, at every step (the reference's store sees them
        all); with `fused_outside_windows`, only where this step changes or records a map: elsewhere the layer runs
        fused attention, equal to float rounding (≤1e-5 after 50 steps) and 1.3× faster on CPU, but a method with a
        threshold (SPDInv's proximal guidance) may then flip an element that sits on it."""
        if not self.fused_outside_windows:
            return site.is_cross or site.resolution <= self.self_replace_max_resolution
        if site.is_cross:
            blending = self.local_blend is not None and self.local_blend.uses(site)
            return self.step < self.cross_replace_until or blending
        if site.resolution > self.self_replace_max_resolution:
            return False
        return self.step < max(self.self_replace_until, self.uncond_self_replace_until)

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        cond = probs[-1]  # (branches, heads, queries, keys); branch 0 is the source
        if site.is_cross:
            if self.step < self.cross_replace_until:
                cond[1:] = self.replace_cross(cond[0], cond[1:])
            if self.local_blend is not None and self.local_blend.uses(site):
                self.local_blend.record(site, cond)  # after the edit, as the reference's store sees it
        elif site.resolution <= self.self_replace_max_resolution:
            if self.step < self.self_replace_until:
                cond[1:] = cond[:1]
            if probs.shape[0] == 2 and self.step < self.uncond_self_replace_until:
                probs[0, 1:] = probs[0, :1]
        return probs

    def replace_cross(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """source (heads, queries, 77), target (branches-1, heads, queries, 77) -> the target's new maps."""
        if self.refine is None:
            replaced = torch.einsum("hqw,wn->hqn", source, self.replace.to(source)).expand_as(target)
        else:
            mapper, alphas = self.refine
            alphas = alphas.to(source.dtype)
            replaced = source[..., mapper] * alphas + target * (1 - alphas)
        if self.token_scale is not None:
            replaced = replaced * self.token_scale.to(replaced)
        return replaced

    def end_step(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.local_blend is None else self.local_blend(step, latents)


@EDITORS.register("p2p")
@dataclass
class PromptToPrompt(Editor):
    families = EPSILON_UNETS
    guidance_scale: Guidance
    controller: Literal["refine", "replace", "auto", "word_count", "characters"]
    cross_replace_steps: Fraction
    self_replace_steps: Fraction
    self_replace_max_resolution: Steps
    reweight: NonNegative | None
    local_blend: bool
    blend_start: Fraction
    blend_threshold: Fraction
    blend_map_divisor: Steps
    attention_outside_windows: Literal["materialised", "fused"]

    def prompt_problems(self, sample: Sample, tokenizer: Any, limit: int) -> list[str]:
        """A blended word the local blend or the re-weighting reads must lie within the tokens the encoder reads
        (the reference indexes its 77 maps with the word's positions and fails on one beyond them)."""
        if sample.blended_words is None or not (self.local_blend or self.reweight is not None):
            return []
        return words_beyond_limit(tokenizer, sample, limit)

    def uncond_self_replace_until(self, num_steps: int) -> int:
        return 0  # P2P edits the conditional half only; P2Plus overrides this

    def fast_path(self) -> PromptToPrompt:
        return dataclasses.replace(self, attention_outside_windows="fused")  # maps only where a step reads them

    batches = True

    def edit_together(
        self, model: DiffusionModel, inversions: Sequence[InversionResult], samples: Sequence[Sample]
    ) -> list[EditResult]:
        """Several samples in one denoiser call per step, each with its own controller on its own rows."""
        built = [self.build_control(model, inversion, sample) for inversion, sample in zip(inversions, samples)]
        controllers, infos = zip(*built)
        return edit_samples_together(model, inversions, samples, self.guidance_scale, controllers, infos)

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        control, info = self.build_control(model, inversion, sample)
        cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
        latents = denoise_branches(model, inversion, cond, self.guidance_scale, control)
        return EditResult(edited=latents[1:], reconstruction=latents[:1], info=info)

    def build_control(
        self, model: DiffusionModel, inversion: InversionResult, sample: Sample
    ) -> tuple[PromptToPromptControl, dict[str, Any]]:
        tokenizer, source, target = model.tokenizer, sample.source_prompt, sample.target_prompt
        source_word = sample.blended_words[0] if sample.blended_words else None
        if inversion.source_tokens == "target":
            # the source branch conditions on an embedding laid out in the target prompt's tokens (PTI): align the
            # branches token for token, and take its blend region from the target word
            source = target
            source_word = sample.blended_words[1] if sample.blended_words else None
        # windows are shares of the whole timestep grid, counted from the first step run (edit-friendly DDPM runs 38
        # of 50 steps; its reference sizes P2P's windows on the 50)
        num_steps = inversion.grid_steps or len(inversion.schedule.timesteps)
        mode = _controller_mode(self.controller, tokenizer, source, target)
        if mode == "replace" and len(source.split(" ")) != len(target.split(" ")):
            raise InvbenchError(
                f"editor.controller={self.controller} swaps words, which needs prompts with the same number of words; "
                f"sample {sample.id} has '{source}' -> '{target}'. Use editor.controller=refine or auto."
            )
        info: dict[str, Any] = {"controller": mode}
        if inversion.source_tokens == "target":
            info["source_tokens"] = "target"
        blend, token_scale = None, None
        beyond = words_beyond_limit(tokenizer, sample, MAX_TOKENS) if sample.blended_words is not None else []
        if beyond and (self.local_blend or self.reweight is not None):
            raise InvbenchError(f"sample {sample.id}: {beyond[0]}")
        if sample.blended_words is not None:
            target_word = sample.blended_words[1]
            source_positions = token_positions(tokenizer, source, source_word)
            target_positions = token_positions(tokenizer, target, target_word)
            note = _missing_word_note(source_word, source_positions, target_word, target_positions, self.local_blend)
            if note:
                log.warning("sample %s: %s", sample.id, note)
                info["blend_note"] = note
            if self.local_blend:
                weights = torch.zeros(2, MAX_TOKENS)
                weights[0, source_positions], weights[1, target_positions] = 1, 1
                side = inversion.noise_latent.shape[-1] // self.blend_map_divisor
                blend = LocalBlend(weights, int(self.blend_start * num_steps), self.blend_threshold, side)
            if self.reweight is not None and target_positions:
                token_scale = torch.ones(MAX_TOKENS)
                token_scale[target_positions] = self.reweight
                info["reweighted_tokens"] = target_positions
        info["local_blend"] = blend is not None
        # the mappers, weights and scales go to the model's device once, not at every attention call
        on_device = partial(torch.Tensor.to, device=model.device)
        if blend is not None:
            blend.word_weights = on_device(blend.word_weights)
        control = PromptToPromptControl(
            refine=tuple(map(on_device, refinement_mapper(tokenizer, source, target))) if mode == "refine" else None,
            replace=on_device(replacement_mapper(tokenizer, source, target)) if mode == "replace" else None,
            cross_replace_until=int(self.cross_replace_steps * (num_steps + 1)),
            self_replace_until=int(self.self_replace_steps * num_steps),
            self_replace_max_resolution=self.self_replace_max_resolution,
            token_scale=None if token_scale is None else on_device(token_scale),
            local_blend=blend,
            uncond_self_replace_until=self.uncond_self_replace_until(num_steps),
            fused_outside_windows=self.attention_outside_windows == "fused",
        )
        return control, info


def _missing_word_note(
    source_word: str, source_positions: list[int], target_word: str, target_positions: list[int], blend: bool
) -> str | None:
    """What a blended word missing from its prompt does (as in the reference), for the log and the row."""
    if source_positions and target_positions:
        return None
    missing = [
        f"'{w}'" for w, found in ((source_word, source_positions), (target_word, target_positions)) if not found
    ]
    what = (
        f"blended word {' and '.join(missing)} not found in {'its prompt' if len(missing) == 1 else 'their prompts'}"
    )
    if not blend:
        return what + ("" if target_positions else "; no re-weighting")
    if not source_positions and not target_positions:
        return what + ": from the first blend step the target is the source (no edit), as in the reference"
    if not target_positions:
        return what + ": the target blends with the source word's region only, not re-weighted, as in the reference"
    return what + ": the target blends with the target word's region only, as in the reference"


def _controller_mode(rule: str, tokenizer, source: str, target: str) -> str:
    """refine or replace, by the configured rule: always one of them; `auto`, replace when every word has the same
    number of tokens in both prompts; `word_count`, replace when the prompts have as many words (edit-friendly
    DDPM's reference run); `characters`, replace when the prompts, stripped of spaces at the ends, are equally long
    (StyleDiffusion's reference run)."""
    if rule == "auto":
        return "replace" if swap_compatible(tokenizer, source, target) else "refine"
    if rule == "word_count":
        return "replace" if len(source.split(" ")) == len(target.split(" ")) else "refine"
    if rule == "characters":
        return "replace" if len(source.strip(" ")) == len(target.strip(" ")) else "refine"
    return rule
