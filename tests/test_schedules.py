"""Schedules as objects (invbench/ddim.py, invbench/flow_matching.py): the model hands out its schedule, x̂_0 on
hand-built inputs, and flow matching's Euler steps against diffusers' FlowMatchEulerDiscreteScheduler."""

from __future__ import annotations

import pytest
import torch
from conftest import conf_file

from invbench.ddim import DDIMSchedule
from invbench.flow_matching import FlowMatchSchedule

SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}  # stable-diffusion-3-medium's scheduler_config.json


def test_the_model_hands_out_its_schedule_with_changes(tiny_model):
    schedule = tiny_model.schedule(10)
    assert (
        isinstance(schedule, DDIMSchedule)
        and schedule.timesteps == DDIMSchedule(tiny_model.scheduler_config, 10).timesteps
    )
    assert tiny_model.schedule(10, steps_offset=0).timesteps[-1] == 0 and schedule.timesteps[-1] == 1


def test_ddim_predicts_x0_exactly_from_a_noised_latent():
    schedule = DDIMSchedule(conf_file("scheduler/ddim.yaml"), 10)
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    t = schedule.timesteps[3]
    alpha = schedule.alpha_cumprod(t)
    noised = alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise
    torch.testing.assert_close(schedule.predict_x0(noise, t, noised), x0, rtol=0, atol=1e-5)
    # the step toward t − Δ goes through the same x̂_0
    previous = schedule.alpha_cumprod(schedule.previous_timestep(t))
    expected = previous.sqrt() * x0 + (1 - previous).sqrt() * noise
    torch.testing.assert_close(schedule.step(noise, t, noised), expected, rtol=0, atol=1e-5)


def test_flow_matching_grid_and_steps_equal_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = FlowMatchSchedule(SD3_SCHEDULER, 4)
    reference = FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER)
    reference.set_timesteps(4)
    assert schedule.timesteps == [float(t) for t in reference.timesteps]
    assert schedule.timesteps[0] == 1000.0 and float(schedule.next_sigma(schedule.timesteps[-1])) == 0.0
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 16, 8, 8, generator=generator)
    for t in reference.timesteps:
        velocity = torch.randn(1, 16, 8, 8, generator=generator)
        expected = reference.step(velocity, t, latent).prev_sample
        ours = schedule.step(velocity, float(t), latent)
        # the same float32 operations; a tolerance all the same, as diffusers may reorder them in another release
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
        latent = expected


@pytest.mark.parametrize("num_steps", [1, 4, 28])
def test_flow_matching_inverse_step_undoes_step_and_x0_is_exact(num_steps):
    schedule = FlowMatchSchedule(SD3_SCHEDULER, num_steps)
    generator = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(1, 16, 8, 8, generator=generator), torch.randn(1, 16, 8, 8, generator=generator)
    velocity = noise - x0  # the rectified-flow target: straight paths
    for t in schedule.timesteps:
        sigma = schedule.sigma(t)
        x_t = (1 - sigma) * x0 + sigma * noise
        torch.testing.assert_close(schedule.predict_x0(velocity, t, x_t), x0, rtol=0, atol=1e-5)
        stepped = schedule.step(velocity, t, x_t)
        sigma_next = schedule.next_sigma(t)
        # on a straight path the Euler step is exact
        torch.testing.assert_close(stepped, (1 - sigma_next) * x0 + sigma_next * noise, rtol=0, atol=1e-5)
        torch.testing.assert_close(schedule.inverse_step(velocity, t, stepped), x_t, rtol=0, atol=1e-5)
