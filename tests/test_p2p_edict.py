"""EDICT's Prompt-to-Prompt (editors/p2p_edict.py): the token alignment of the reference's init_attention_edit on
hand prompts, the map replacement on hand maps, the base branch evaluated at the target's latents, identical prompts
keeping the source, and the evaluation count with EDICT's coupled sampler."""

from __future__ import annotations

from functools import partial

import torch
from conftest import conf_file, relative_error

from editors import EDITORS
from editors.p2p_edict import BaseAttentionOnTarget, token_alignment
from invbench.attention import AttentionSite
from inversions import INVERSIONS
from metrics import CostMeter

CROSS = AttentionSite("up_blocks.1.attentions.0.transformer_blocks.0.attn2", "up", is_cross=True, resolution=8)
SELF = AttentionSite("up_blocks.1.attentions.0.transformer_blocks.0.attn1", "up", is_cross=False, resolution=8)


def test_tokens_pair_by_sequence_matching(tiny_model):
    tokenizer = tiny_model.tokenizer
    ids = lambda prompt: tokenizer(prompt).input_ids
    assert len(ids("a cat")) == 4 and len(ids("a black cat")) == 5
    # a replaced word of the same length pairs position for position
    mask, indices = token_alignment(tokenizer, "a cat sitting", "a dog sitting")
    assert mask.sum() == 77 and torch.equal(indices, torch.arange(77))
    # an inserted word pairs with nothing; the words after it pair with their source positions, shifted by one
    mask, indices = token_alignment(tokenizer, "a cat", "a black cat")
    assert mask[:2].tolist() == [1, 1] and mask[2] == 0 and mask[3:].sum() == 74
    assert indices[3] == 2 and indices[4] == 3 and indices[76] == 75  # the last source pad is never paired with
    # a replaced run of another length pairs with nothing
    mask, _ = token_alignment(tokenizer, "a cat", "a black dog")
    assert mask[2:4].tolist() == [0, 0]


def test_target_takes_the_base_maps_in_its_conditional_half_only_in_place():
    torch.manual_seed(0)
    given = torch.rand(2, 3, 2, 4, 5).softmax(-1)  # (halves, branches: source, base, target, heads, queries, keys)
    mask, indices = torch.tensor([1.0, 1, 0, 1, 1]), torch.tensor([0, 1, 0, 2, 3])
    control = BaseAttentionOnTarget(mask, indices)
    probs = given.clone()
    out = control.attention(CROSS, probs)
    # the maps are changed where they are: at SD v1.4's 512² they reach 3 GB, and a copy ran out of 24 GB
    assert out is probs
    assert torch.equal(out[0], given[0]) and torch.equal(out[1, :2], given[1, :2])  # unconditional half, other rows
    expected = given[1, 2].clone()
    expected[..., [0, 1, 3, 4]] = given[1, 1][..., [0, 1, 2, 3]]  # paired tokens from the base, token 2 its own
    assert torch.equal(out[1, 2], expected)
    self_maps = control.attention(SELF, given.clone())
    assert torch.equal(self_maps[1, 2], given[1, 1]) and torch.equal(self_maps[0], given[0])


def test_the_base_branch_is_evaluated_at_the_target_latents():
    seen = []

    def parts(latents, **kwargs):
        seen.append((latents.clone(), kwargs))
        return None, latents

    latents = torch.arange(3.0).reshape(3, 1)
    BaseAttentionOnTarget(torch.ones(77), torch.arange(77)).step_noise_parts(parts)(latents, cond_latents=None)
    assert seen[0][0].flatten().tolist() == [0.0, 2.0, 2.0] and seen[0][1] == {"cond_latents": None}


def test_identical_prompts_keep_the_source_and_edict_costs_three_branches(tiny_model, sample, source_latent):
    import dataclasses

    steps = 6
    inversion = INVERSIONS.build(conf_file("inversion/edict.yaml") | {"num_steps": steps})
    inverted = inversion.invert(tiny_model, source_latent, sample)
    editor = EDITORS.build(conf_file("editor/p2p_edict.yaml"))
    same = dataclasses.replace(sample, target_prompt=sample.source_prompt)
    kept = editor.edit(tiny_model, inverted, same)
    assert torch.allclose(kept.edited, kept.reconstruction, atol=1e-6)
    meter = CostMeter(tiny_model.denoiser, torch.device("cpu"))
    with meter.phase("edit"):
        edited = editor.edit(tiny_model, inverted, sample)
    meter.close()
    used = int(0.8 * steps)
    # two coupled evaluations per step, each of 3 branches × 2 halves (EDICT guides at 3)
    assert meter.values["edit_unet_evals"] == used * 2 * 3 * 2
    # the reconstruction is EDICT's own source branch; the edit differs from the plain target prompt's
    direct = EDITORS.build({"name": "direct", "guidance_scale": 7.5}).edit(tiny_model, inverted, sample)
    assert torch.allclose(edited.reconstruction, direct.reconstruction, atol=1e-6)
    assert relative_error(edited.edited, direct.edited) > 1e-4


def test_the_controller_changes_the_target_prediction(tiny_model, sample, source_latent):
    from invbench.attention import attention_control

    cond = tiny_model.encode_prompts([sample.source_prompt, sample.source_prompt, sample.target_prompt])
    uncond = tiny_model.encode_prompts([""]).expand(3, -1, -1)
    parts = partial(tiny_model.noise_parts, t=501, cond=cond, uncond=uncond, guidance_scale=7.5)
    latents = torch.cat([source_latent, torch.randn_like(source_latent), source_latent + 0.1])
    plain_uncond, plain_cond = parts(torch.cat([latents[:1], latents[2:], latents[2:]]))
    control = BaseAttentionOnTarget(*token_alignment(tiny_model.tokenizer, sample.source_prompt, sample.target_prompt))
    control.num_branches = 3
    with attention_control(tiny_model.denoiser, control, latents.shape[-1]), torch.no_grad():
        noise_uncond, noise_cond = control.step_noise_parts(parts)(latents)
    # the unconditional half and the source are untouched; the base row is the source prompt at the target latent
    assert torch.allclose(noise_uncond, plain_uncond, atol=1e-6)
    assert torch.allclose(noise_cond[:2], plain_cond[:2], atol=1e-6)
    assert relative_error(noise_cond[2:], plain_cond[2:]) > 1e-4
