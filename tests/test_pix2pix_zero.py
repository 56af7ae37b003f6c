"""pix2pix-zero: cross-attention guidance of the target toward the source branch's maps, the source kept."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from conftest import conf_file, relative_error

from editors import EDITORS
from editors.pix2pix_zero import CrossAttentionGuidance
from invbench.attention import AttentionSite, attention_control
from inversions import INVERSIONS
from metrics import CostMeter

STEPS = 6
SITE = AttentionSite("up_blocks.1.attentions.0.transformer_blocks.0.attn2", "up", is_cross=True, resolution=8)


def pix2pix_zero(**changes):
    return EDITORS.build(conf_file("editor/pix2pix_zero.yaml") | changes)


def invert(model, latent, sample):
    return INVERSIONS.build({"name": "ddim", "num_steps": STEPS, "guidance_scale": 1.0}).invert(model, latent, sample)


def test_loss_is_the_summed_squared_map_distance_averaged_over_halves_and_heads():
    # (halves 2, branches 2, heads 1, queries 1, tokens 2); the target differs by (0.1, -0.1) in the uncond half
    # and by (0.3, -0.3) in the cond half: per half 0.02 and 0.18, mean 0.1
    probs = torch.tensor([[[[[0.5, 0.5]]], [[[0.6, 0.4]]]], [[[[0.2, 0.8]]], [[[0.5, 0.5]]]]])
    guidance = CrossAttentionGuidance(learning_rate=0.1, model_dtype=torch.float32, per_half=True)
    guidance.loss = torch.zeros(())
    assert torch.equal(guidance.attention(SITE, probs), probs)  # the maps themselves are not edited
    assert torch.isclose(guidance.loss, torch.tensor(0.1))
    guidance.loss = None
    assert not guidance.wants(SITE)  # outside the guidance forward the layers run fused attention


@pytest.mark.parametrize("per_half", [True, False])
def test_a_guidance_step_moves_the_target_toward_the_source_maps(per_half, tiny_model, sample, source_latent):
    """per_half (the reference): each half's copy of the target moves by the gradient of its own half's maps, and
    the step evaluates ε_u at the unconditional copy and ε_c at the conditional one; shared: one latent, both halves."""
    inverted = invert(tiny_model, source_latent, sample)
    cond = tiny_model.encode_prompts([sample.source_prompt, sample.target_prompt])
    uncond = tiny_model.encode_prompts([""]).expand(2, -1, -1)
    t = inverted.schedule.timesteps[0]
    parts = partial(tiny_model.noise_parts, t=t, cond=cond, uncond=uncond, guidance_scale=7.5)
    guidance = CrossAttentionGuidance(learning_rate=1e-3, model_dtype=torch.float32, per_half=per_half)
    guidance.num_branches = 2
    latents = inverted.noise_latent.repeat(2, 1, 1, 1)

    def distance(noise_parts, at: torch.Tensor) -> float:
        guidance.loss = torch.zeros(())
        noise_parts(at)
        value, guidance.loss = float(guidance.loss), None
        return value

    with attention_control(tiny_model.denoiser, guidance, latents.shape[-1]), torch.no_grad():
        before = distance(parts, latents)
        guided = guidance.before_step(0, latents, parts)
        step_parts = guidance.step_noise_parts(parts)
        after = distance(step_parts, guided)
        if per_half:
            conditional = guidance.cond_latents
            assert torch.equal(conditional[:1], latents[:1]) and relative_error(conditional, guided) > 1e-7
            # the step's evaluation puts the conditional half at the conditional copy
            noise_uncond, noise_cond = step_parts(guided)
            assert torch.allclose(noise_cond, parts(conditional)[1], atol=1e-6)
            assert torch.allclose(noise_uncond, parts(guided)[0], atol=1e-6)
        else:
            assert guidance.cond_latents is None and step_parts is parts
    assert torch.equal(guided[:1], latents[:1])  # the source branch is the reference, never guided
    assert before > 0 and after < before


def test_source_branch_is_kept_and_guidance_changes_the_target(tiny_model, sample, source_latent):
    inverted = invert(tiny_model, source_latent, sample)
    direct = EDITORS.build({"name": "direct", "guidance_scale": 7.5}).edit(tiny_model, inverted, sample)
    meter = CostMeter(tiny_model.denoiser, torch.device("cpu"))
    with meter.phase("edit"):
        edited = pix2pix_zero().edit(tiny_model, inverted, sample)
    meter.close()
    assert torch.allclose(edited.reconstruction, direct.reconstruction, atol=1e-5)
    # the tiny model's maps are small (8×8 latents), so the reference rate moves the target only a little
    moved = relative_error(edited.edited, direct.edited)
    assert moved > 1e-5
    assert relative_error(pix2pix_zero(cross_attention_guidance=10.0).edit(tiny_model, inverted, sample).edited,
                          direct.edited) > 10 * moved  # fmt: skip
    # a guidance forward and the step's forward, each on 2 branches × 2 halves
    assert meter.values["edit_unet_evals"] == 2 * 2 * 2 * STEPS
    unguided = pix2pix_zero(cross_attention_guidance=0.0).edit(tiny_model, inverted, sample)
    # the target embedding is source + (target − source) as in the reference, within ~6e-8 of the target's own
    assert torch.allclose(unguided.edited, direct.edited, atol=1e-4)
