"""Flow inversion: the plain (Euler) inversion of a rectified-flow model, the baseline every flow-matching
inversion paper compares with ("vanilla" inversion in RF-Inversion, Rout et al., ICLR 2025; RF-Solver, Wang et al.,
ICML 2025), as DDIM inversion is for ε-models.

Contract: from x_0 (the VAE latent), for each timestep of the model's flow-matching grid from the least noisy up,
x_σ(t) = x_σ' + (σ(t) − σ') v(x_σ', t, c), with the velocity at the source prompt (guided at `guidance_scale`; 1:
conditional only). Its error is first order in the step (it evaluates v at the latent it starts from, not on the
path), so it falls as steps grow. Editors then sample with the model's Euler step along the same grid.
The loop is DDIM inversion's (inversions/ddim.py): what changes is the schedule the model hands out (its backbone's:
invbench/flow_matching.py) and the families it runs on. Cost: N evaluations (2N with guidance above 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from inversions.base import INVERSIONS
from inversions.ddim import DDIMInversion


@INVERSIONS.register("flow")
@dataclass
class FlowInversion(DDIMInversion):
    families = frozenset({"sd3"})  # FLUX joins with its backbone (issue 18)
