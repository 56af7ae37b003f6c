"""pix2pix-zero's inversion: the noise regulariser's losses on hand values, the regulariser whitening noise, and the
inversion being DDIM at guidance 1 with the source prompt as unconditional embedding when switched off."""

from __future__ import annotations

import math

import torch
from conftest import conf_file, relative_error

from inversions import INVERSIONS
from inversions.noise_regularisation import autocorrelation_loss, kl_to_standard_normal


def inversion(**changes):
    return INVERSIONS.build(conf_file("inversion/pix2pix_zero.yaml") | {"num_steps": 4} | changes)


def test_autocorrelation_loss_sums_every_channel_level_and_axis():
    # a constant map correlates fully with every shift: 1 per axis, per level, per channel
    assert float(autocorrelation_loss(torch.ones(1, 4, 8, 8))) == 4 * 2
    assert float(autocorrelation_loss(torch.ones(1, 4, 16, 16))) == 4 * 2 * 2  # levels 16 and 8
    # a checkerboard under a shift of 0 or 2 correlates fully, under 1 or 3 with -1: squared, always 1 per axis
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    assert float(autocorrelation_loss(board.expand(1, 1, 8, 8))) == 2


def test_kl_divergence_from_hand_values():
    values = torch.tensor([1.0, -1.0, 1.0, -1.0])  # mean 0, unbiased variance 4/3
    assert math.isclose(float(kl_to_standard_normal(values)), 4 / 3 - 1 - math.log(4 / 3 + 1e-7), rel_tol=1e-6)
    assert abs(float(kl_to_standard_normal(torch.randn(100_000)))) < 1e-3


def test_regularisation_whitens_correlated_noise():
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 4, 4, 4), size=16, mode="bilinear") * 3 + 0.5
    regularised = inversion().regularise(smooth)
    torch.manual_seed(1)
    before = autocorrelation_loss(smooth)
    torch.manual_seed(1)
    assert autocorrelation_loss(regularised) < before
    assert kl_to_standard_normal(regularised) < kl_to_standard_normal(smooth)


def test_without_regularisation_it_is_ddim_inversion_with_the_source_prompt_as_null(tiny_model, sample, source_latent):
    plain = inversion(lambda_ac=0.0, lambda_kl=0.0, inverse_grid="ddim").invert(tiny_model, source_latent, sample)
    ddim = INVERSIONS.build({"name": "ddim", "num_steps": 4, "guidance_scale": 1.0}).invert(
        tiny_model, source_latent, sample
    )
    # switched off, it runs DDIM inversion's own computation: bit-identical on any CPU (same inputs, same kernels)
    assert all(torch.equal(a, b) for a, b in zip(plain.latents, ddim.latents))
    assert torch.equal(plain.hooks.embeddings[0], tiny_model.encode_prompts([sample.source_prompt]))
    # The tiny model's ε has variance ~1e-3 (its output is tamed ×0.1), where the reference's KL step of 20,
    # calibrated for SD's unit-variance ε, overshoots to NaN; a step of 1 whitens it without diverging.
    regularised = inversion(lambda_kl=1.0).invert(tiny_model, source_latent, sample)
    assert torch.isfinite(regularised.noise_latent).all()
    assert relative_error(regularised.noise_latent, ddim.noise_latent) > 1e-3


def test_the_reference_grid_runs_its_alphas_one_training_step_early_and_ends_on_the_last(
    tiny_model, sample, source_latent
):
    """The reference's DDIMInverseScheduler at UNet timestep t moves from ᾱ[t − 1] to ᾱ[t − 1 + Δ], the last step to
    ᾱ[999]: at 4 steps (timesteps 1, 251, 501, 751) the alphas are ᾱ[0] → ᾱ[250] → ᾱ[500] → ᾱ[750] → ᾱ[999]."""
    from invbench.ddim import DDIMSchedule

    result = inversion(lambda_ac=0.0, lambda_kl=0.0).invert(tiny_model, source_latent, sample)
    schedule = DDIMSchedule(tiny_model.scheduler_config, 4)
    assert list(reversed(schedule.timesteps)) == [1, 251, 501, 751]
    source = tiny_model.encode_prompts([sample.source_prompt])
    alphas = [0, 250, 500, 750, 999]
    for k, t in enumerate(reversed(schedule.timesteps)):
        latent = result.latents[k].double()
        noise = tiny_model.predict_noise(result.latents[k], t, source).double()
        a_from, a_to = (float(schedule.alpha_cumprod(i)) for i in alphas[k : k + 2])
        by_hand = a_to**0.5 * (latent - (1 - a_from) ** 0.5 * noise) / a_from**0.5 + (1 - a_to) ** 0.5 * noise
        assert relative_error(result.latents[k + 1].double(), by_hand) < 1e-5
    # the editor's DDIM grid differs from it
    ddim = inversion(lambda_ac=0.0, lambda_kl=0.0, inverse_grid="ddim").invert(tiny_model, source_latent, sample)
    assert relative_error(result.noise_latent, ddim.noise_latent) > 1e-3


def test_the_reference_grid_refuses_a_grid_from_timestep_0(tiny_model, sample, source_latent):
    import dataclasses

    import pytest

    from invbench.errors import ConfigError

    model = dataclasses.replace(tiny_model, scheduler_config={**tiny_model.scheduler_config, "steps_offset": 0})
    with pytest.raises(ConfigError, match="steps_offset=1"):
        inversion().invert(model, source_latent, sample)


def test_the_reference_draws_the_posterior_sample_from_the_global_generator(tiny_model):
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    torch.manual_seed(5)
    first = inversion().encode_source(tiny_model, image)
    torch.manual_seed(5)
    again = inversion().encode_source(tiny_model, image)
    mean = inversion(image_latent="posterior_mean").encode_source(tiny_model, image)
    assert torch.equal(first, again)
    assert relative_error(first, mean) > 1e-4
