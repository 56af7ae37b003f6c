"""Optimisation-based inversions on the tiny model (8×8 latents, 10 steps): each lowers the source-branch
reconstruction error at guidance 7.5 compared with DDIM inversion, and honours its editing contract."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import conf_file, relative_error

from editors import EDITORS, denoise_branches
from inversions import INVERSIONS
from inversions.base import StepHooks
from inversions.stylediffusion import ValueMapping
from inversions.todinv import LevelPrompts

STEPS = 10


def build(name: str, **overrides):
    return INVERSIONS.build(conf_file(f"inversion/{name}.yaml") | {"num_steps": STEPS} | overrides)


def source_branch(model, inversion, sample):
    cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
    return denoise_branches(model, inversion, cond, 7.5)


@pytest.fixture(scope="module")
def ddim_error(tiny_model, sample):
    from invbench.images import fit_square

    latent = tiny_model.encode_image(fit_square(sample.read_image(), tiny_model.resolution))
    inversion = INVERSIONS.build({"name": "ddim", "num_steps": STEPS, "guidance_scale": 1.0}).invert(
        tiny_model, latent, sample
    )
    return relative_error(source_branch(tiny_model, inversion, sample)[:1], latent)


def test_null_text_inversion_lowers_the_reconstruction_error(tiny_model, sample, source_latent, ddim_error):
    inversion = build("nti").invert(tiny_model, source_latent, sample)  # the reference's lr 1e-2
    error = relative_error(source_branch(tiny_model, inversion, sample)[:1], source_latent)
    assert error < 0.7 * ddim_error  # measured: 0.24 -> 0.14
    assert inversion.info["optimisation_steps"] == sum(inversion.info["optimisation_steps_per_timestep"])
    assert all(1 <= n <= 10 for n in inversion.info["optimisation_steps_per_timestep"])
    # no autograd graph survives the inversion: nothing it returns needs or holds gradients
    for tensor in [*inversion.hooks.embeddings, *inversion.latents]:
        assert tensor.grad_fn is None and not tensor.requires_grad


def test_null_text_early_stop_cuts_iterations(tiny_model, sample, source_latent):
    inversion = build("nti", early_stop=1.0e3).invert(tiny_model, source_latent, sample)  # any loss is small enough
    assert inversion.info["optimisation_steps_per_timestep"] == [1] * STEPS


def test_null_text_single_branch_keeps_the_empty_null_in_the_target(tiny_model, sample, source_latent):
    inversion = build("nti", single_branch=True, inner_steps=2).invert(tiny_model, source_latent, sample)
    assert inversion.hooks.branches == "source"
    all_branches = dataclasses.replace(inversion.hooks, branches="all")
    both = source_branch(tiny_model, dataclasses.replace(inversion, hooks=all_branches), sample)
    single = source_branch(tiny_model, inversion, sample)
    plain = source_branch(tiny_model, dataclasses.replace(inversion, hooks=StepHooks()), sample)
    torch.testing.assert_close(single[:1], both[:1], rtol=0, atol=1e-6)  # source branch: optimised nulls
    torch.testing.assert_close(single[1:], plain[1:], rtol=0, atol=1e-6)  # target branch: ""


def test_prompt_tuning_lowers_the_reconstruction_error(tiny_model, sample, source_latent):
    # The tiny model's random text pathway is weak (eps_c - eps_u is ~13% of eps), so tuning c needs a larger step
    # than the paper's β = 0.1 on SD; the algorithm is unchanged. Baseline: DDIM inversion with ω = 0, as PTI's.
    baseline = INVERSIONS.build({"name": "ddim", "num_steps": STEPS, "guidance_scale": 0.0})
    ddim = baseline.invert(tiny_model, source_latent, sample)
    ddim_error = relative_error(source_branch(tiny_model, ddim, sample)[:1], source_latent)
    inversion = build("pti", iterations=10, learning_rate=10.0).invert(tiny_model, source_latent, sample)
    error = relative_error(source_branch(tiny_model, inversion, sample)[:1], source_latent)
    assert error < 0.75 * ddim_error  # measured: 0.27 -> 0.16
    assert inversion.info["optimisation_steps"] == 10 * STEPS


def test_prompt_tuning_eta_zero_reconstructs_and_eta_one_is_ddim_edit(tiny_model, sample, source_latent):
    inversion = build("pti", eta=0.0).invert(tiny_model, source_latent, sample)
    direct = EDITORS.build({"name": "direct", "guidance_scale": 7.5})
    reconstruct = direct.edit(tiny_model, inversion, sample)
    # η = 0: the target conditions on exactly the tuned embedding, so the edit is the reconstruction. The two are
    # rows of one batched UNet call, equal up to how the kernels round different rows.
    torch.testing.assert_close(reconstruct.edited, reconstruct.reconstruction, rtol=0, atol=1e-6)
    ddim_edit = direct.edit(
        tiny_model, build("ddim", guidance_scale=0.0).invert(tiny_model, source_latent, sample), sample
    )
    at_one = dataclasses.replace(inversion.hooks, eta=1.0)
    full = direct.edit(tiny_model, dataclasses.replace(inversion, hooks=at_one), sample)
    torch.testing.assert_close(full.edited, ddim_edit.edited, rtol=1e-4, atol=1e-5)  # η = 1: DDIM-Edit


@pytest.mark.parametrize("edit_class", ["global", "structure", "appearance"])
def test_todinv_lowers_the_reconstruction_error_for_every_edit_class(
    tiny_model, sample, source_latent, ddim_error, edit_class
):
    # lr 1e-2 instead of the paper's 1e-3 for a clear margin in 10 steps (1e-3 measured: 0.24 -> 0.21 global)
    task = dataclasses.replace(sample, edit_class=edit_class)
    inversion = build("todinv", learning_rate=1e-2).invert(tiny_model, source_latent, task)
    error = relative_error(source_branch(tiny_model, inversion, task)[:1], source_latent)
    assert error < 0.75 * ddim_error  # measured: global 0.10, structure 0.14, appearance 0.16
    assert inversion.info["edit_class"] == edit_class and inversion.info["optimisation_steps"] > 0


def test_todinv_leaves_the_levels_of_the_edit_bit_identical(tiny_model, sample, source_latent):
    """At 8×8 latents the cross-attention levels are 4 (appearance: side / 2) and 2, 1 (structure: side / 4, / 8)."""
    source = tiny_model.encode_prompts([sample.source_prompt])
    for edit_class, frozen, tuned in (("appearance", [4], [1, 2]), ("structure", [1, 2], [4])):
        task = dataclasses.replace(sample, edit_class=edit_class)
        inversion = build("todinv", learning_rate=1e-2, inner_steps=3).invert(tiny_model, source_latent, task)
        assert inversion.info["tuned_levels"] == tuned
        for step in inversion.hooks.per_step:
            assert sorted(step) == [1, 2, 4]
            assert all(torch.equal(step[level], source) for level in frozen)  # never touched: the source itself
            assert all(relative_error(step[level], source) > 1e-4 for level in tuned)  # moved by the optimiser


def test_todinv_target_reads_the_target_prompt_plus_the_tuned_offset(tiny_model, sample, source_latent):
    """Eq. 10: with every level's offset zero, the edit is plain DDIM-Edit from the same noise."""
    inversion = build("todinv", inner_steps=2).invert(tiny_model, source_latent, sample)
    source = tiny_model.encode_prompts([sample.source_prompt])
    zero_offsets = LevelPrompts([{level: source for level in step} for step in inversion.hooks.per_step])
    untouched = dataclasses.replace(inversion, hooks=zero_offsets)
    plain = dataclasses.replace(inversion, hooks=StepHooks())
    cond = tiny_model.encode_prompts([sample.source_prompt, sample.target_prompt])
    torch.testing.assert_close(
        denoise_branches(tiny_model, untouched, cond, 7.5), denoise_branches(tiny_model, plain, cond, 7.5)
    )
    assert (
        relative_error(
            denoise_branches(tiny_model, inversion, cond, 7.5), denoise_branches(tiny_model, plain, cond, 7.5)
        )
        > 1e-3
    )


def test_stylediffusion_lowers_the_reconstruction_error(tiny_model, sample, source_latent, ddim_error):
    inversion = build("stylediffusion", inner_steps=5).invert(tiny_model, source_latent, sample)
    error = relative_error(source_branch(tiny_model, inversion, sample)[:1], source_latent)
    assert error < 0.5 * ddim_error  # measured with 10 inner steps: 0.24 -> 0.07
    assert inversion.info["optimisation_steps_per_timestep"][0] <= 5 and inversion.hooks.target_until == STEPS // 2
    assert len(inversion.hooks.modulation) == STEPS and inversion.hooks.modulation[0][0].shape == (1, 77, 32)
    without = build("stylediffusion", inner_steps=5, attention_loss=False).invert(tiny_model, source_latent, sample)
    # the map loss acts: the first step's scale moves by far more than rounding
    assert relative_error(without.hooks.modulation[0][0], inversion.hooks.modulation[0][0]) > 1e-4


def test_value_modulation_changes_values_not_keys(tiny_model, sample, source_latent):
    """Identity modulation (scale 1, shift 0) changes nothing; a real one changes the source branch at every step
    and the target branch only inside its window."""
    inversion = INVERSIONS.build({"name": "ddim", "num_steps": STEPS, "guidance_scale": 1.0}).invert(
        tiny_model, source_latent, sample
    )
    cond = tiny_model.encode_prompts([sample.source_prompt, sample.target_prompt])
    plain = denoise_branches(tiny_model, inversion, cond, 7.5)
    identity = [(torch.ones(1, 77, 32), torch.zeros(1, 77, 32))] * STEPS
    same = dataclasses.replace(inversion, hooks=ValueMapping(identity, target_until=STEPS))
    torch.testing.assert_close(denoise_branches(tiny_model, same, cond, 7.5), plain, rtol=1e-4, atol=1e-5)
    shifted = [(torch.ones(1, 77, 32), torch.full((1, 77, 32), 0.5))] * STEPS
    shifting = dataclasses.replace(inversion, hooks=ValueMapping(shifted, target_until=0))
    source_only = denoise_branches(tiny_model, shifting, cond, 7.5)
    assert relative_error(source_only[:1], plain[:1]) > 1e-3
    torch.testing.assert_close(source_only[1:], plain[1:], rtol=1e-4, atol=1e-5)  # window 0: targets untouched


@pytest.mark.parametrize("name", ["nti", "pti", "spdinv", "todinv", "stylediffusion"])
@pytest.mark.parametrize("editor", ["direct", "p2p"])
def test_optimised_inversions_compose_with_editors(tiny_model, sample, source_latent, name, editor):
    inversion = build(name, **({} if name == "pti" else {"inner_steps": 2})).invert(tiny_model, source_latent, sample)
    result = EDITORS.build(conf_file(f"editor/{editor}.yaml")).edit(tiny_model, inversion, sample)
    assert result.edited.shape == result.reconstruction.shape == source_latent.shape
    assert torch.isfinite(result.edited).all()


def test_spdinv_lowers_the_reconstruction_error_and_the_fixed_point_residual(
    tiny_model, sample, source_latent, ddim_error
):
    from inversions import fixed_point_residual

    source = tiny_model.encode_prompts([sample.source_prompt])
    ddim = INVERSIONS.build({"name": "ddim", "num_steps": STEPS, "guidance_scale": 1.0}).invert(
        tiny_model, source_latent, sample
    )
    inversion = build("spdinv").invert(tiny_model, source_latent, sample)  # the reference's settings
    error = relative_error(source_branch(tiny_model, inversion, sample)[:1], source_latent)
    assert error < 0.5 * ddim_error  # measured: 0.24 -> 0.02
    residual, ddim_residual = (fixed_point_residual(tiny_model, inv, source) for inv in (inversion, ddim))
    assert residual < 0.75 * ddim_residual  # measured: 0.0059 -> 0.0031
    assert 1 <= inversion.info["optimisation_steps"] <= 25 * STEPS
    nulls, _ = inversion.hooks.parts  # the reference's NPI-style editing: the source prompt as the null
    assert all(torch.equal(u, source) for u in nulls.embeddings)


def test_spdinv_edits_with_proximal_and_inversion_guidance_as_its_official_code(tiny_model, sample, source_latent):
    """run_SPDInv_P2P.py edits with proximal guidance and, below t = 400, pulls the unedited elements onto the SPDInv
    trajectory. With the source prompt as the null, the source branch's δ is 0, so nothing of it counts as edited:
    below t = 400 it is put on the trajectory, and it ends on z*_0; plain guided DDIM (spdinv_plain) does not."""
    official = build("spdinv", inner_steps=3).invert(tiny_model, source_latent, sample)
    assert official.state() == {"conditioning", "step"} and official.hooks.stepper.settings.quantile == 0.7
    result = source_branch(tiny_model, official, sample)
    torch.testing.assert_close(result[:1], official.latents[0], rtol=0, atol=1e-6)
    plain = build("spdinv", inner_steps=3, proximal_guidance=False).invert(tiny_model, source_latent, sample)
    assert plain.state() == {"conditioning"}
    assert relative_error(source_branch(tiny_model, plain, sample)[:1], official.latents[0]) > 1e-3
    assert relative_error(result[1:], result[:1]) > 1e-3  # the target is edited


@pytest.mark.parametrize(("name", "backward_per_step"), [("nti", 1), ("pti", 1), ("spdinv", 1), ("todinv", 1)])
def test_backward_passes_are_counted_once_per_optimisation_step(
    tiny_model, sample, source_latent, name, backward_per_step
):
    """Each optimisation step differentiates one batch-1 UNet forward (NTI: the unconditional half it tunes), so
    the backward evaluations equal the steps the method reports."""
    from metrics import CostMeter

    meter = CostMeter(tiny_model.denoiser, torch.device("cpu"))
    meter.start_sample()
    try:
        with meter.phase("inversion"):
            inversion = build(name, **({} if name == "pti" else {"inner_steps": 2})).invert(
                tiny_model, source_latent, sample
            )
    finally:
        meter.close()
    steps = inversion.info["optimisation_steps"]
    assert steps > 0 and meter.values["inversion_unet_backward_evals"] == backward_per_step * steps
    assert meter.values["inversion_unet_evals"] >= steps  # every backward goes through a forward of its own
    if name == "nti":  # pivot, ε_cond, one per Adam step, ε_∅ at the tuned null: not the reference's 4N + steps
        assert meter.values["inversion_unet_evals"] == 3 * STEPS + steps


def test_stylediffusion_image_tokens_pass_the_final_layernorm_as_the_reference():
    """The reference's clip_util.py applies ln_post to every token (no projection); transformers' CLIP vision model
    applies its post_layernorm to the pooled CLS token only."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from inversions.stylediffusion import image_tokens

    torch.manual_seed(0)
    config = conf_file("inversion/stylediffusion.yaml")["image_encoder"]["tiny"]["config"]
    encoder = CLIPVisionModel(CLIPVisionConfig(**config, hidden_size=32)).eval()
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = image_tokens(encoder, pixels)
        raw = encoder(pixel_values=pixels).last_hidden_state
    assert tokens.shape == (1, 1 + (224 // 16) ** 2, 32)
    norm = getattr(encoder, "vision_model", encoder).post_layernorm
    torch.testing.assert_close(
        tokens,
        torch.nn.functional.layer_norm(
            raw,
            (32,),
            norm.weight,
            norm.bias,
            norm.eps,
        ),
    )
    assert relative_error(tokens, raw) > 0.1
    torch.testing.assert_close(tokens.mean(-1), torch.zeros(1, 197), rtol=0, atol=1e-5)  # normalised per token
