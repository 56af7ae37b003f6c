"""UniEdit-Flow's inversion, Uni-Inv (Jiao et al., "UniEdit-Flow: Unleashing Inversion and Editing in the Era of Flow
Models", 2025; official code DSL-Lab/UniEdit-Flow, UniEdit-Flow_FLUX/src/flux/sampling.py `edit_uniedit` with
inverse=True, settings edit.py).

Contract: a predictor-corrector up the flow grid that evaluates the velocity where the step lands: from x at σ,
x̂ = x + Δ v̂, then x' = x + Δ v(x̂, σ'), with v̂ the previous step's landing velocity reused (evaluated at the first
step only, or zero with `zero_init`). UniEdit inverts only the first round(α · N) steps (α = 0.6 "delay rate": the
edit starts from a partly noised latent) with the "" prompt at guidance 1, as the reference's uniedit strategy; the
editor then denoises the same last round(α · N) steps (Euler with `editor=direct`, the reference's plain `denoise`;
velocity fusion with `editor=uniedit`). Cost: round(α · N) + 1 evaluations (round(α · N) with `zero_init`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from invbench.hyperparameters import Fraction
from inversions.base import INVERSIONS
from inversions.flow import EulerSolver, FlowInversion, Velocity
from pie_bench import Sample


class UniInvSolver(EulerSolver):
    def __init__(self, zero_init: bool):
        self.zero_init, self.reused = zero_init, None  # the last landing velocity, the next step's predictor

    def advance(self, latent: torch.Tensor, sigma: float, next_sigma: float, velocity: Velocity) -> torch.Tensor:
        delta = next_sigma - sigma
        if self.reused is None:
            start = torch.zeros_like(latent) if self.zero_init else velocity(latent, sigma)
        else:
            start = self.reused
        self.reused = velocity(latent + delta * start, next_sigma)
        return latent + delta * self.reused


@INVERSIONS.register("uniedit_flow")
@dataclass
class UniEditFlowInversion(FlowInversion):
    families = frozenset({"flux"})  # the reference's FLUX code; its SD3 schedulers are not reproduced here
    alpha: Fraction
    prompt_choice: Literal["empty", "source"] = "empty"
    zero_init: bool = False

    def solver(self) -> EulerSolver:
        return UniInvSolver(self.zero_init)

    def inverted_steps(self) -> int:
        return round(self.alpha * self.num_steps)  # Python's rounding, as the reference's step_threshold

    def prompt(self, sample: Sample) -> str:
        return "" if self.prompt_choice == "empty" else sample.source_prompt
