"""Deterministic DDIM (eta = 0) on the timestep grid of a diffusers `DDIMScheduler` config.

Both directions are written out so that inversion and sampling use the same pair of noise levels per step:
`step` denoises z_t -> z_{t-Δ}, `inverse_step` goes z_{t-Δ} -> z_t with the noise predicted at t
(the DDIM-inversion approximation of Song et al. 2021 and Mokady et al. 2023, as in prompt-to-prompt's `next_step`).
`step` equals `DDIMScheduler.step(..., eta=0).prev_sample` exactly (tested).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch


class DDIMSchedule:
    def __init__(self, scheduler_config: Mapping[str, Any], num_steps: int):
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler(**dict(scheduler_config))
        # 0 steps is the empty grid of the no-inversion baseline (inversions/none.py): z_T is z_0
        scheduler.set_timesteps(max(num_steps, 1))
        self.num_steps = num_steps
        self.timesteps: list[int] = [int(t) for t in scheduler.timesteps][:num_steps]  # descending: noisiest first
        self.num_train_timesteps: int = scheduler.config.num_train_timesteps
        self.step_size = self.num_train_timesteps // max(num_steps, 1)
        self._alphas_cumprod = scheduler.alphas_cumprod.clone()
        self._final_alpha_cumprod = torch.as_tensor(scheduler.final_alpha_cumprod)
        self._config = dict(scheduler.config)

    def with_float64_alphas(self) -> DDIMSchedule:
        """A copy whose ᾱ are computed in float64 from the configuration's betas, as early diffusers computed them
        (in numpy). diffusers today computes them in float32, 3e-7 apart relative: a reference that runs in
        float64 throughout (EDICT's) is followed to 1e-8 only on float64 ᾱ. Written out because diffusers no longer
        offers it; linear and scaled_linear betas, the SD families'."""
        config = self._config
        start, end, count = config["beta_start"], config["beta_end"], config["num_train_timesteps"]
        if config["beta_schedule"] == "linear":
            betas = np.linspace(start, end, count, dtype=np.float64)
        elif config["beta_schedule"] == "scaled_linear":
            betas = np.linspace(start**0.5, end**0.5, count, dtype=np.float64) ** 2
        else:
            raise ValueError(f"beta_schedule={config['beta_schedule']!r}: float64 alphas cover linear, scaled_linear")
        schedule = copy.copy(self)
        schedule._alphas_cumprod = torch.from_numpy(np.cumprod(1.0 - betas))
        schedule._final_alpha_cumprod = (
            torch.tensor(1.0, dtype=torch.float64) if config["set_alpha_to_one"] else schedule._alphas_cumprod[0]
        )
        return schedule

    def alpha_cumprod(self, t: int) -> torch.Tensor:
        """ᾱ_t as a 0-dim tensor (ᾱ of the step before t = 0 for t < 0), kept as a tensor so that the arithmetic
        matches diffusers' bit for bit."""
        return self._alphas_cumprod[t] if t >= 0 else self._final_alpha_cumprod

    def previous_timestep(self, t: int) -> int:
        return t - self.step_size

    def step(
        self,
        noise: torch.Tensor,
        t: int,
        latent: torch.Tensor,
        correct_x0: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """z_t -> z_{t-Δ}. `correct_x0` may move the predicted clean latent x̂_0 before the step is completed
        (reconstruction guidance, as ProxEdit's)."""
        return _ddim_move(
            latent, noise, self.alpha_cumprod(t), self.alpha_cumprod(self.previous_timestep(t)), correct_x0
        )

    def inverse_step(self, noise: torch.Tensor, t: int, latent: torch.Tensor) -> torch.Tensor:
        """z_{t-Δ} -> z_t, with `noise` predicted at timestep t."""
        return _ddim_move(latent, noise, self.alpha_cumprod(self.previous_timestep(t)), self.alpha_cumprod(t))

    def predict_x0(self, noise: torch.Tensor, t: int, latent: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (z_t − √(1 − ᾱ_t) ε) / √ᾱ_t, in the order of operations of `step`."""
        alpha = self.alpha_cumprod(t).to(latent)
        return (latent - (1 - alpha) ** 0.5 * noise) / alpha**0.5


def _ddim_move(
    latent: torch.Tensor,
    noise: torch.Tensor,
    alpha_from: torch.Tensor,
    alpha_to: torch.Tensor,
    correct_x0: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Move a latent from noise level ᾱ_from to ᾱ_to along the DDIM ODE (eta = 0), in the latent's dtype and in
    the order of operations of diffusers' DDIMScheduler.step."""
    alpha_from, alpha_to = alpha_from.to(latent), alpha_to.to(latent)
    predicted_x0 = (latent - (1 - alpha_from) ** 0.5 * noise) / alpha_from**0.5
    if correct_x0 is not None:
        predicted_x0 = correct_x0(predicted_x0)
    return alpha_to**0.5 * predicted_x0 + (1 - alpha_to) ** 0.5 * noise
