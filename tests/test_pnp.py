"""Plug-and-Play: source features and self-attention maps injected into the target within their windows only."""

from __future__ import annotations

import pytest
import torch
from conftest import conf_file, relative_error

from editors import EDITORS
from editors.attention import copy_source_rows
from invbench.errors import ConfigError
from inversions import INVERSIONS

STEPS = 8


def pnp(**changes):
    return EDITORS.build(conf_file("editor/pnp.yaml") | changes)


def invert(model, latent, sample):
    return INVERSIONS.build({"name": "ddim", "num_steps": STEPS, "guidance_scale": 1.0}).invert(model, latent, sample)


def test_copy_source_rows_per_half():
    rows = torch.arange(6.0).view(6, 1)  # halves of 3 branches: [0, 1, 2 | 3, 4, 5]
    assert copy_source_rows(rows, 3).flatten().tolist() == [0, 0, 0, 3, 3, 3]


def test_pnp_keeps_the_source_branch_and_injects_into_the_target(tiny_model, sample, source_latent):
    inverted = invert(tiny_model, source_latent, sample)
    direct = EDITORS.build({"name": "direct", "guidance_scale": 7.5}).edit(tiny_model, inverted, sample)
    edited = pnp().edit(tiny_model, inverted, sample)
    assert torch.allclose(edited.reconstruction, direct.reconstruction, atol=1e-5)
    assert relative_error(edited.edited, direct.edited) > 1e-3
    # nothing injected and no negative prompt: exactly DDIM-Edit
    off = pnp(feature_steps=0.0, attention_steps=0.0, negative_prompt="").edit(tiny_model, inverted, sample)
    assert torch.allclose(off.edited, direct.edited, atol=1e-5)
    # each injection on its own changes the target
    for changes in ({"feature_steps": 1.0, "attention_steps": 0.0}, {"feature_steps": 0.0, "attention_steps": 1.0}):
        alone = pnp(negative_prompt="", **changes).edit(tiny_model, inverted, sample)
        assert relative_error(alone.edited, direct.edited) > 1e-4, changes


def test_unknown_feature_block_is_a_config_error(tiny_model, sample, source_latent):
    with pytest.raises(ConfigError, match="feature_block 'up_blocks.9.resnets.1' is not a module"):
        pnp(feature_block="up_blocks.9.resnets.1").edit(tiny_model, invert(tiny_model, source_latent, sample), sample)
