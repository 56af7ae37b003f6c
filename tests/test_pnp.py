"""Plug-and-Play: the reference's two passes (a source pass at guidance 1, then a target fed the features of a pinned
feature branch), its ResNet residual injection that keeps the target's skip connection, and its choice of latents."""

from __future__ import annotations

import pytest
import torch
from conftest import conf_file, relative_error

from editors import EDITORS
from editors.pnp import FeatureInjection
from invbench.attention import AttentionSite, copy_source_rows
from invbench.errors import ConfigError
from inversions import INVERSIONS
from orchestration.compatibility import incompatibilities

STEPS = 8
SELF_SITE = AttentionSite("up_blocks.1.attentions.1.transformer_blocks.0.attn1", "up", is_cross=False, resolution=8)


def pnp(**changes):
    return EDITORS.build(conf_file("editor/pnp.yaml") | changes)


def invert(model, latent, sample, name="ddim", **changes):
    config = {"name": name, "num_steps": STEPS} | ({"guidance_scale": 1.0} if name == "ddim" else {}) | changes
    return INVERSIONS.build(config).invert(model, latent, sample)


def test_copy_source_rows_per_half():
    rows = torch.arange(6.0).view(6, 1)  # halves of 3 branches: [0, 1, 2 | 3, 4, 5]
    assert copy_source_rows(rows, 3).flatten().tolist() == [0, 0, 0, 3, 3, 3]


def test_attention_injection_changes_the_maps_in_place():
    """Every branch but the source takes the conditional half's source maps, in the tensor it is given: at SD v1.4's
    512² those maps are 3 GB, and a copy added as much again to the edit's peak memory."""
    torch.manual_seed(0)
    given = torch.rand(2, 3, 2, 4, 4).softmax(-1)  # (halves, branches, heads, queries, keys)
    control = FeatureInjection([], ("up_blocks",), attention_until=1, feature_until=0)
    control.begin_step(0)
    probs = given.clone()
    out = control.attention(SELF_SITE, probs)
    assert out is probs
    assert torch.equal(out[:, 0], given[:, 0])  # the source branch keeps its own
    assert all(torch.equal(out[half, branch], given[1, 0]) for half in (0, 1) for branch in (1, 2))
    control.begin_step(1)  # outside the window: untouched
    assert torch.equal(control.attention(SELF_SITE, given.clone()), given)


def test_pnp_reconstructs_at_guidance_1_and_injects_into_the_target(tiny_model, sample, source_latent):
    inverted = invert(tiny_model, source_latent, sample)
    at_1 = EDITORS.build({"name": "direct", "guidance_scale": 1.0}).edit(tiny_model, inverted, sample)
    direct = EDITORS.build({"name": "direct", "guidance_scale": 7.5}).edit(tiny_model, inverted, sample)
    edited = pnp().edit(tiny_model, inverted, sample)
    # the source pass is DDIM's reconstruction at guidance 1, as the reference's
    torch.testing.assert_close(edited.reconstruction, at_1.reconstruction, rtol=0, atol=1e-5)
    assert edited.info == {"features_shifted": True, "source_guidance": 1.0}
    assert relative_error(edited.edited, direct.edited) > 1e-3
    # nothing injected, no negative prompt, the target started from z_T: exactly DDIM-Edit's target
    off = pnp(feature_steps=0.0, attention_steps=0.0, negative_prompt="", feature_latents="aligned")
    torch.testing.assert_close(off.edit(tiny_model, inverted, sample).edited, direct.edited, rtol=0, atol=1e-5)
    # each injection on its own changes the target
    for changes in ({"feature_steps": 1.0, "attention_steps": 0.0}, {"feature_steps": 0.0, "attention_steps": 1.0}):
        alone = pnp(negative_prompt="", feature_latents="aligned", **changes).edit(tiny_model, inverted, sample)
        assert relative_error(alone.edited, direct.edited) > 1e-4, changes


def test_the_reference_shifts_features_for_a_reconstruction_and_not_for_directinversion(
    tiny_model, sample, source_latent
):
    plain = invert(tiny_model, source_latent, sample)
    shifted, aligned = (
        pnp().edit(tiny_model, plain, sample),
        pnp(feature_latents="aligned").edit(tiny_model, plain, sample),
    )
    assert shifted.info["features_shifted"] and not aligned.info["features_shifted"]
    assert relative_error(shifted.edited, aligned.edited) > 1e-4
    direct_inversion = invert(
        tiny_model, source_latent, sample, "directinversion", inversion_guidance_scale=1.0, edit_guidance_scale=7.5,
        offset_scale=1.0, offset_interval=1, offset_branches="source",
    )  # fmt: skip
    edited = pnp().edit(tiny_model, direct_inversion, sample)
    # its offsets need the guidance they were computed for, and make the source pass retrace z*_0
    assert edited.info == {"features_shifted": False, "source_guidance": 7.5}
    torch.testing.assert_close(edited.reconstruction, direct_inversion.latents[0], rtol=0, atol=1e-4)


def test_feature_injection_replaces_the_residual_branch_and_keeps_the_skip_connection(tiny_model):
    """up_blocks.1.resnets.1 computes (shortcut(x) + residual(x)) / s; the target's row must become
    (shortcut(x_target) + residual(x_feature)) / s, not the feature row's whole output (the skip included)."""
    block = tiny_model.denoiser.up_blocks[1].resnets[1]
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(2, block.conv1.in_channels, 8, 8, generator=generator)
    embedding = torch.randn(2, block.time_emb_proj.in_features, generator=generator)
    with torch.no_grad():
        plain = block(rows, embedding)
        shortcut = block.conv_shortcut(rows) if block.conv_shortcut is not None else rows
        controller = FeatureInjection([], (), 0, feature_until=1)
        controller.num_branches, controller.step = 2, 0
        with controller.residual_hook(block.conv2):
            injected = block(rows, embedding)
    scale = block.output_scale_factor
    expected_target = plain[0] + (shortcut[1] - shortcut[0]) / scale
    torch.testing.assert_close(injected[1], expected_target, rtol=0, atol=1e-5)
    torch.testing.assert_close(injected[0], plain[0], rtol=0, atol=0)
    assert relative_error(injected[1], plain[0]) > 1e-3  # not the feature row's output


def test_source_guidance_follows_the_inversion_state_unless_set():
    editor, nti = pnp(), INVERSIONS.build(conf_file("inversion/nti.yaml") | {"num_steps": STEPS})
    assert editor.source_guidance(frozenset()) == 1.0
    assert editor.source_guidance(nti.state()) == 7.5
    assert incompatibilities(nti, editor) == []
    refused = incompatibilities(nti, pnp(source_guidance_scale=1.0))
    assert refused and "set inversion.guidance_scale and editor.source_guidance_scale to one value" in refused[0]


def test_unknown_feature_block_is_a_config_error(tiny_model, sample, source_latent):
    with pytest.raises(ConfigError, match="feature_block='up_blocks.9.resnets.1' is not a ResNet block"):
        pnp(feature_block="up_blocks.9.resnets.1").edit(tiny_model, invert(tiny_model, source_latent, sample), sample)
