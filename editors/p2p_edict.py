"""EDICT's Prompt-to-Prompt (Wallace et al., "EDICT: Exact Diffusion Inversion via Coupled Transformations", CVPR
2023, §4 "attention-based editing"), as the PIE-Bench reference runs `edict+p2p` (run_editing_edict.py,
models/edict/edict_functions.py: `EDICT_editing(use_p2p=True)` → `coupled_stablediffusion(base, edit)`,
`init_attention_edit`, `new_attention`; cure-lab/PnPInversion 07f97f4).

Contract: one generative pass for the edit. At every UNet evaluation of the target, the base (source) prompt is
first evaluated on the target's own latent and its attention maps are kept; the target prompt's evaluation then
takes, in its conditional half, every self-attention map of the base evaluation whole, and in every cross-attention
layer the base's map of each target token that the token alignment pairs with a source token (difflib's
SequenceMatcher over the 77 padded token ids: equal runs, and replaced runs of equal length, position for position;
other tokens keep their own maps, no renormalisation). This happens at every step (the reference's
prompt_edit_tokens/spatial windows [0, 1]); the unconditional half ("" at EDICT's guidance) is never changed, and
the base evaluation's own noise is discarded. Here that is three branches batched in one UNet call per evaluation:
the source (its reconstruction), the base prompt evaluated at the target's latents (the maps), and the target (the
edit). With `inversion=edict` this is the reference's `edict+p2p`; with other inversions the same control runs on
their sampler. `editor=p2p` with EDICT is invbench's two-branch P2P instead (the source branch's maps on the
source's latents, in P2P's windows). With identical prompts every token pairs with itself, the maps are the
target's own and the target equals the source.
UNet evaluations: 3 branches per evaluation, doubled by guidance (the reference's base evaluation has no
unconditional half: one row more than its 5 per step pair, the same result).
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher

import torch

from editors.base import EDITORS, Editor, EditResult, denoise_branches
from invbench.attention import AttentionController, AttentionSite
from invbench.hyperparameters import Guidance
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import InversionResult, NoiseParts
from pie_bench import Sample

SOURCE, BASE, TARGET = 0, 1, 2  # the branches


def token_alignment(tokenizer, base_prompt: str, edit_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, indices) over the padded token positions of `edit_prompt`: mask 1 where the position pairs with
    `indices`' position in `base_prompt` (SequenceMatcher's equal runs and equal-length replaced runs)."""
    length = tokenizer.model_max_length
    base, edit = (
        tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
        for prompt in (base_prompt, edit_prompt)
    )
    mask, indices = torch.zeros(length), torch.zeros(length, dtype=torch.long)
    for name, a0, a1, b0, b1 in SequenceMatcher(None, base, edit).get_opcodes():
        if name == "equal" or (name == "replace" and a1 - a0 == b1 - b0):
            mask[b0:b1] = 1
            indices[b0:b1] = torch.arange(a0, a1)
    return mask, indices


class BaseAttentionOnTarget(AttentionController):
    """Puts the base branch's attention into the target branch's conditional half, and evaluates the base branch at
    the target's latents."""

    def __init__(self, mask: torch.Tensor, indices: torch.Tensor):
        self.mask, self.indices = mask, indices

    def attention(self, site: AttentionSite, probs: torch.Tensor) -> torch.Tensor:
        # probs: (halves, branches, heads, queries, keys); the conditional half is the last
        base, target = probs[-1, BASE], probs[-1, TARGET]
        if site.is_cross:
            mask = self.mask.to(probs)
            replaced = target * (1 - mask) + base.index_select(-1, self.indices.to(probs.device)) * mask
        else:
            replaced = base
        # in place: with SD v1.4 at 512² the maps reach 3 GB, and a copy ran edict + p2p_edict out of 24 GB
        probs[-1, TARGET] = replaced
        return probs

    def step_noise_parts(self, noise_parts: NoiseParts) -> NoiseParts:
        def at_target(latents: torch.Tensor, **kwargs):
            latents = torch.cat([latents[:BASE], latents[TARGET:], latents[TARGET:]])
            return noise_parts(latents, **kwargs)

        return at_target


@EDITORS.register("p2p_edict")
@dataclass
class EDICTPromptToPrompt(Editor):
    families = EPSILON_UNETS
    guidance_scale: Guidance

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        cond = model.encode_prompts([sample.source_prompt, sample.source_prompt, sample.target_prompt])
        controller = BaseAttentionOnTarget(
            *token_alignment(model.tokenizer, sample.source_prompt, sample.target_prompt)
        )
        latents = denoise_branches(model, inversion, cond, self.guidance_scale, controller)
        return EditResult(edited=latents[TARGET:], reconstruction=latents[:BASE])
