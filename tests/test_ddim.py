"""DDIM: our schedule against diffusers, and the inversion invariants on the tiny model."""

import dataclasses
import itertools

import pytest
import torch
from conftest import conf_file, relative_error

from editors import denoise_branches
from invbench.ddim import DDIMSchedule
from inversions import INVERSIONS

SCHEDULER = conf_file("scheduler/ddim.yaml")


def ddim(num_steps=10, guidance_scale=1.0):
    return INVERSIONS.build({"name": "ddim", "num_steps": num_steps, "guidance_scale": guidance_scale})


def test_timesteps_follow_steps_offset():
    # The default is the grid every reference run visits (StableDiffusionPipeline sets steps_offset 1).
    assert DDIMSchedule(SCHEDULER, 50).timesteps[:2] == [981, 961]
    assert DDIMSchedule(SCHEDULER, 50).timesteps[-1] == 1
    assert DDIMSchedule(SCHEDULER | {"steps_offset": 0}, 50).timesteps[::49] == [980, 0]


@pytest.mark.parametrize("steps_offset", [0, 1])
def test_step_equals_diffusers_ddim_step(steps_offset):
    from diffusers import DDIMScheduler

    config = SCHEDULER | {"steps_offset": steps_offset}
    schedule, reference = DDIMSchedule(config, 50), DDIMScheduler(**config)
    reference.set_timesteps(50)
    generator = torch.Generator().manual_seed(0)
    for t in schedule.timesteps[::7] + [schedule.timesteps[-1]]:
        latent, noise = torch.randn(2, 1, 4, 8, 8, generator=generator)
        expected = reference.step(noise, t, latent, eta=0.0).prev_sample
        assert torch.equal(schedule.step(noise, t, latent), expected)


def test_inverse_step_undoes_step_for_the_same_noise():
    schedule = DDIMSchedule(SCHEDULER, 50)
    latent, noise = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in schedule.timesteps:
        assert torch.allclose(schedule.step(noise, t, schedule.inverse_step(noise, t, latent)), latent, atol=1e-10)


def test_inversion_trajectory_shape_and_noise_levels(tiny_model, sample, source_latent):
    result = ddim(num_steps=10).invert(tiny_model, source_latent, sample)
    assert len(result.latents) == 11 and torch.equal(result.latents[0], source_latent)
    assert all(z.shape == source_latent.shape and torch.isfinite(z).all() for z in result.latents)
    # On the reference grid (steps_offset 1, set_alpha_to_one false) the first inversion step goes from ᾱ_0 to ᾱ_1
    # (0.99915 to 0.9983): a small move. Every later step moves the latent further from the source.
    distances = [relative_error(z, source_latent) for z in result.latents[1:]]
    assert distances[0] < 0.01 and all(near < far for near, far in itertools.pairwise(distances))
    # With steps_offset 0 the first step goes from ᾱ_{-Δ} = ᾱ_0 (the final ᾱ) to ᾱ_0: an identity up to rounding.
    offset_0 = dataclasses.replace(tiny_model, scheduler_config=tiny_model.scheduler_config | {"steps_offset": 0})
    first = ddim(num_steps=10).invert(offset_0, source_latent, sample).latents[1]
    assert torch.allclose(first, source_latent, atol=1e-6)


def test_ddim_inversion_reconstructs_at_guidance_1_and_drifts_at_7_5(tiny_model, sample, source_latent):
    inversion = ddim(num_steps=10).invert(tiny_model, source_latent, sample)
    cond = tiny_model.encode_prompts([sample.source_prompt])
    error_at_1 = relative_error(denoise_branches(tiny_model, inversion, cond, 1.0), source_latent)
    error_at_7_5 = relative_error(denoise_branches(tiny_model, inversion, cond, 7.5), source_latent)
    assert error_at_1 < 0.1  # measured 0.048
    assert error_at_7_5 > 3 * error_at_1  # measured 0.24


def test_more_steps_reconstruct_better(tiny_model, sample, source_latent):
    cond = tiny_model.encode_prompts([sample.source_prompt])
    errors = []
    for steps in (5, 20):
        inversion = ddim(num_steps=steps).invert(tiny_model, source_latent, sample)
        errors.append(relative_error(denoise_branches(tiny_model, inversion, cond, 1.0), source_latent))
    assert errors[1] < errors[0]


def test_inversion_with_guidance_differs_from_conditional_only(tiny_model, sample, source_latent):
    plain = ddim(guidance_scale=1.0).invert(tiny_model, source_latent, sample)
    guided = ddim(guidance_scale=3.0).invert(tiny_model, source_latent, sample)
    assert relative_error(guided.noise_latent, plain.noise_latent) > 1e-3
