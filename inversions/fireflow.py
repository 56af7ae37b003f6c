"""FireFlow (Deng et al., "FireFlow: Fast Inversion of Rectified Flow for Image Semantic Editing", ICML 2025;
official code HolmesShuan/FireFlow-Fast-Inversion-of-Rectified-Flow-for-Image-Semantic-Editing,
src/flux/sampling.py `denoise_fireflow`): a second-order solver at the cost of a first-order one, used for the
inversion and for the editor's sampling alike.

Contract: each step from σ to σ' (Δ = σ' − σ) takes the midpoint rule x' = x + Δ · v(x + Δ/2 · v̂, σ + Δ/2), where
v̂ is the previous step's midpoint velocity reused as the velocity at x (evaluated only at the first step of each
pass). Inversion with the source prompt at guidance 1, editing at the editor's guidance, both with this step: the
reconstruction error falls about 4× as steps double, and beats Euler at equal evaluations.
Cost: N + 1 evaluations in each direction (per branch when editing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inversions.base import INVERSIONS, StepHooks
from inversions.flow import EulerSolver, FlowInversion, SolverSampler, Velocity


class FireFlowSolver(EulerSolver):
    def __init__(self):
        self.reused: torch.Tensor | None = None  # the last midpoint velocity, the next step's velocity at its start

    def advance(self, latent: torch.Tensor, sigma: float, next_sigma: float, velocity: Velocity) -> torch.Tensor:
        delta = next_sigma - sigma
        start = velocity(latent, sigma) if self.reused is None else self.reused
        self.reused = velocity(latent + delta / 2 * start, sigma + delta / 2)
        return latent + delta * self.reused


@INVERSIONS.register("fireflow")
@dataclass
class FireFlowInversion(FlowInversion):
    produces = frozenset({"step"})

    def solver(self) -> EulerSolver:
        return FireFlowSolver()

    def sampler(self) -> StepHooks:
        return SolverSampler(FireFlowSolver)
