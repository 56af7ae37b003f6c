"""P2Plus (Li et al., "StyleDiffusion: Prompt-Embedding Inversion for Text-Based Editing", §3.4 / §5.2.1).

Contract: Prompt-to-Prompt (editors/p2p.py) plus self-attention map replacement in the *unconditional* half of
classifier-free guidance: for the first `uncond_self_replace_steps` of the steps (StyleDiffusion's τ_u), the target
branch's unconditional self-attention maps at ≤ `self_replace_max_resolution`² take the source branch's. This frees the
target's structure from the source prompt where the edit changes it a lot. At τ_u = 0 it is P2P. Needs guidance > 1
(there is no unconditional half otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from editors.base import EDITORS
from editors.p2p import PromptToPrompt
from invbench.hyperparameters import Fraction


@EDITORS.register("p2plus")
@dataclass
class P2Plus(PromptToPrompt):
    uncond_self_replace_steps: Fraction

    def uncond_self_replace_until(self, num_steps: int) -> int:
        return int(self.uncond_self_replace_steps * num_steps)
