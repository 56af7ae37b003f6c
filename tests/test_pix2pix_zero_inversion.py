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
    plain = inversion(lambda_ac=0.0, lambda_kl=0.0).invert(tiny_model, source_latent, sample)
    ddim = INVERSIONS.build({"name": "ddim", "num_steps": 4, "guidance_scale": 1.0}).invert(
        tiny_model, source_latent, sample
    )
    # switched off, it runs DDIM inversion's own computation: bit-identical on any CPU (same inputs, same kernels)
    assert all(torch.equal(a, b) for a, b in zip(plain.latents, ddim.latents))
    assert torch.equal(plain.uncond_embeddings[0], tiny_model.encode_prompts([sample.source_prompt]))
    # The tiny model's ε has variance ~1e-3 (its output is tamed ×0.1), where the reference's KL step of 20,
    # calibrated for SD's unit-variance ε, overshoots to NaN; a step of 1 whitens it without diverging.
    regularised = inversion(lambda_kl=1.0).invert(tiny_model, source_latent, sample)
    assert torch.isfinite(regularised.noise_latent).all()
    assert relative_error(regularised.noise_latent, ddim.noise_latent) > 1e-3
