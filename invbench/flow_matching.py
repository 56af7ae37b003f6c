"""Flow matching (rectified flow, velocity prediction) on the sigma grid of a diffusers
`FlowMatchEulerDiscreteScheduler` config: the schedule of SD3 and FLUX, with the interface of invbench/ddim.py's
DDIMSchedule (`timesteps`, `step`, `inverse_step`, `predict_x0`), so that an inversion asks the model for its schedule
and never builds one.

x_σ = (1 − σ) x_0 + σ ε and the model predicts v = ε − x_0, so x̂_0 = x_σ − σ v. `step` is the Euler step
x_{σ'} = x_σ + (σ' − σ) v toward the next (smaller) σ', as FlowMatchEulerDiscreteScheduler.step (in float32);
`inverse_step` is the same Euler step backwards, from σ' to σ with the velocity predicted at t (the approximation plain
flow inversion makes, as DDIM inversion's).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch


class FlowMatchSchedule:
    def __init__(
        self,
        scheduler_config: Mapping[str, Any],
        num_steps: int,
        mu: float | None = None,
        sigmas: Sequence[float] | None = None,
    ):
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler(**dict(scheduler_config))
        # `mu`: the resolution-dependent shift of FLUX-style configs (use_dynamic_shifting); `sigmas`: the grid before
        # shifting, where a pipeline passes its own (FLUX: linspace(1, 1/N, N), BFL's get_schedule without its 0)
        options = {} if mu is None else {"mu": mu}
        if sigmas is not None and num_steps > 0:
            options["sigmas"] = list(sigmas)
        scheduler.set_timesteps(max(num_steps, 1), **options)
        self.num_steps = num_steps
        self.num_train_timesteps: int = scheduler.config.num_train_timesteps
        self.timesteps: list[float] = [float(t) for t in scheduler.timesteps][:num_steps]  # descending: noisiest first
        self._sigmas = scheduler.sigmas.clone()  # one more than timesteps: the final σ (0)
        self._index = {t: i for i, t in enumerate(self.timesteps)}

    def tail(self, steps: int) -> FlowMatchSchedule:
        """The last `steps` steps of this grid (the least noisy), for methods that invert only part of the way."""
        part = copy.copy(self)
        part.timesteps = self.timesteps[len(self.timesteps) - steps :]
        part.num_steps = steps
        return part

    def sigma(self, t: float) -> torch.Tensor:
        return self._sigmas[self._index[t]]

    def next_sigma(self, t: float) -> torch.Tensor:
        """σ after the step from t (the final σ after the last)."""
        return self._sigmas[self._index[t] + 1]

    def timestep_at(self, sigma: float | torch.Tensor) -> float:
        """The model's timestep input at noise level σ (diffusers' convention: σ · num_train_timesteps)."""
        return float(sigma) * self.num_train_timesteps

    def step(self, velocity: torch.Tensor, t: float, latent: torch.Tensor) -> torch.Tensor:
        """x_σ(t) -> x_σ' (the next, less noisy level)."""
        return _euler(latent, velocity, self.next_sigma(t) - self.sigma(t))

    def inverse_step(self, velocity: torch.Tensor, t: float, latent: torch.Tensor) -> torch.Tensor:
        """x_σ' -> x_σ(t), with `velocity` predicted at t."""
        return _euler(latent, velocity, self.sigma(t) - self.next_sigma(t))

    def predict_x0(self, velocity: torch.Tensor, t: float, latent: torch.Tensor) -> torch.Tensor:
        return (latent.float() - self.sigma(t) * velocity.float()).to(latent.dtype)


def _euler(latent: torch.Tensor, velocity: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    # diffusers steps in float32 and casts back to the model output's dtype
    return (latent.to(torch.float32) + dt * velocity).to(velocity.dtype)
