"""The inversion contract: what every inversion method produces, and therefore what every editor may consume.

An inversion maps the VAE latent z_0 of a source image to a starting noise latent z_T plus whatever per-step state its
method defines so that denoising with the source prompt comes back to the image. Editors run one *source branch*
(source prompt; its output is the reconstruction) and one or more *target branches* (target prompt) from z_T over the
same timesteps. The per-step state below is how methods steer those branches; a field left as None means "the plain
DDIM behaviour", so an editor that honours every field works with every inversion.

Per-step fields are indexed by the denoising step i = 0 .. num_steps-1, i.e. by timestep `schedule.timesteps[i]`.
Which of them a method fills is declared on the method (`Inversion.state`), so a pairing with an editor that cannot
use that state is refused before any job starts (invbench/compatibility.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from invbench.ddim import DDIMSchedule
from invbench.models import DiffusionModel, NoiseParts
from invbench.registry import Registry
from pie_bench import Sample

# The fields of InversionResult that carry per-step state, with how they are named in messages.
INVERSION_STATE: dict[str, str] = {
    "uncond_embeddings": "per-step unconditional embeddings",
    "cond_embeddings": "per-step conditional embeddings",
    "level_embeddings": "per-layer (per-resolution) embeddings",
    "value_modulation": "per-step cross-attention value modulation",
    "latent_offsets": "per-step latent offsets of the source branch",
    "target_latent_offsets": "per-step latent offsets of the target branches",
    "sampler": "its own reverse sampler",
}


@dataclass
class InversionResult:
    schedule: DDIMSchedule
    """The timestep grid the trajectory lives on; editors denoise along exactly these timesteps."""

    latents: list[torch.Tensor]
    """The inversion trajectory z*_0 .. z*_T (num_steps + 1 tensors of shape (1, 4, h, w)). latents[0] is the VAE
    latent of the source; latents[k] (k >= 1) sits at noise level schedule.timesteps[num_steps - k], so denoising
    step i starts from latents[num_steps - i] and ideally lands on latents[num_steps - i - 1]."""

    uncond_embeddings: list[torch.Tensor] | None = None
    """Per-step unconditional embeddings (1, 77, D) used by classifier-free guidance in every branch
    (null-text-style methods). None: the embedding of the empty prompt ""."""

    uncond_branches: str = "all"
    """Which branches use `uncond_embeddings`: "all", or "source" (target branches keep "")."""

    cond_embeddings: list[torch.Tensor] | None = None
    """Per-step conditional embeddings (1, 77, D) that replace the source prompt's embedding in the source branch
    (prompt-tuning methods). None: the source prompt's embedding."""

    target_cond_weight: float | None = None
    """With `cond_embeddings`: target branches condition on w · c_target + (1 − w) · cond_embeddings[i] (PTI's
    condition interpolation, w = η). None: target branches condition on the target prompt alone."""

    grid_steps: int | None = None
    """The length of the timestep grid `schedule`'s steps were taken from, where a method runs only its last part
    (edit-friendly DDPM after its skip, EDICT below its strength). Prompt-to-Prompt sizes its windows on it, as those
    methods' references do. None: the schedule's own length."""

    source_tokens: str = "source"
    """Which prompt's tokens the source branch's conditioning is laid out in: "source", or "target" where the
    method tunes its source-branch embedding from the target prompt (PTI). Token-level editors (P2P) align the
    branches' tokens and find the blended words by it."""

    level_embeddings: list[dict[int, torch.Tensor]] | None = None
    """Per-step, per-resolution conditional embeddings {query resolution: (1, 77, D)} (TODInv's P* space): the
    source branch's cross-attention layers at that resolution read them instead of the source prompt, and target
    branches read c_target + (embedding − c_source) there (TODInv Eq. 10). Resolutions not listed keep the prompts.
    Resolutions are those of `editors.attention.attention_sites` (64, 32, 16, 8 for SD at 512²)."""

    value_modulation: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    """Per-step (scale, shift), each (1, 77, D): cross-attention *values* of the conditional half read
    c ⊙ scale + shift instead of the prompt embedding c, keys keep c (StyleDiffusion) — in the source branch at every
    step, in target branches for the steps before `value_target_until`."""

    value_target_until: int = 0

    latent_offsets: list[torch.Tensor] | None = None
    """Per-step corrections (1, 4, h, w) added to the source branch right after denoising step i
    (DirectInversion-style methods). None: no correction."""

    target_latent_offsets: list[torch.Tensor] | None = None
    """Per-step corrections (1, 4, h, w) added to every target branch right after denoising step i (DirectInversion's
    add-target / add-source ablations). None: no correction."""

    sampler: Sampler | None = None
    """How one denoising step moves the branches, for methods whose reverse process is not guided DDIM (proximal
    guidance, EDICT's coupled latents, edit-friendly DDPM's stored noise). None: DDIM with classifier-free
    guidance."""

    info: dict[str, Any] = field(default_factory=dict)
    """Method-specific numbers for the result row, e.g. optimisation steps actually taken."""

    @property
    def noise_latent(self) -> torch.Tensor:
        return self.latents[-1]

    def state(self) -> frozenset[str]:
        """The INVERSION_STATE fields this result fills."""
        return frozenset(name for name in INVERSION_STATE if getattr(self, name) is not None)




class Sampler(ABC):
    """A method-specific reverse step. `noise_parts(latents)` evaluates the UNet on `latents` (B, 4, h, w) with the
    step's embeddings and returns (ε_uncond, ε_cond) per branch; ε_uncond is None at guidance 1, where only the
    conditional half is evaluated. Called under the editor's attention controller, once per step."""

    @abstractmethod
    def step(
        self, i: int, t: int, latents: torch.Tensor, noise_parts: NoiseParts, guidance_scale: float
    ) -> torch.Tensor:
        """Denoising step i (timestep t): the latents after it."""


class Inversion(ABC):
    """Base class of inversion methods. Subclasses are dataclasses whose fields are their hyperparameters
    (all set from conf/inversion/<name>.yaml) and are registered in `INVERSIONS`."""

    name: ClassVar[str]
    produces: ClassVar[frozenset[str]] = frozenset()  # the INVERSION_STATE fields every result of this method fills
    guidance_key: ClassVar[str] = "guidance_scale"  # the hyperparameter `tuned_for_guidance` reports
    families: ClassVar[frozenset[str]] = frozenset({"sd"})  # the model families it works on (MODEL_FAMILIES)

    def encode_source(self, model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
        """The latent z_0 this method inverts, of the uint8 H×W×3 source image: the VAE posterior mean, unless the
        method's reference encodes otherwise."""
        return model.encode_image(image)

    @abstractmethod
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        """Invert `image_latent` (1, 4, h, w) of `sample`'s source image; may use its prompts and edit class."""

    def state(self) -> frozenset[str]:
        """The INVERSION_STATE fields this configuration's results fill, known from the hyperparameters alone
        (tests check it against real results): what an editor must be able to use."""
        return self.produces

    def tuned_for_guidance(self) -> float | None:
        """The classifier-free guidance scale this method's state is computed for (its hyperparameter
        `guidance_key`): an editor guiding at another scale loses the reconstruction the state exists for.
        None: the state does not depend on it."""
        return None

    def needs_unconditional_half(self) -> bool:
        """Whether the method's sampler needs the unconditional prediction, i.e. editor guidance above 1."""
        return False


INVERSIONS: Registry[Inversion] = Registry("inversion")


def optimise(
    optimizer: torch.optim.Optimizer, loss: Callable[[], torch.Tensor], max_iterations: int, stop_below: float | None
) -> int:
    """Take up to `max_iterations` optimizer steps on `loss()`, stopping after the first whose loss was below
    `stop_below` (None: never); returns the number taken. Each iteration builds and frees its own graph."""
    for taken in range(1, max_iterations + 1):
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if stop_below is not None and value.item() < stop_below:
            return taken
    return max_iterations


def guided_step_error(
    schedule: DDIMSchedule,
    latent: torch.Tensor,
    t: int,
    noise_uncond: torch.Tensor,
    noise_cond: torch.Tensor,
    guidance_scale: float,
    goal: torch.Tensor,
) -> torch.Tensor:
    """Mean squared distance between one classifier-free-guided DDIM step from `latent` and `goal` (the loss that
    null-text-style inversions minimise per step)."""
    noise = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
    return F.mse_loss(schedule.step(noise, t, latent), goal)


@torch.no_grad()
def fixed_point_residual(model: DiffusionModel, inversion: InversionResult, prompt_embedding: torch.Tensor) -> float:
    """Mean over inversion steps of ‖z_t − DDIM⁻¹(z_{t−Δ}; ε(z_t, t, c))‖ / ‖z_t‖: how far each latent of the
    trajectory is from the fixed point exact inversion needs (0: denoising with c retraces the trajectory)."""
    schedule, latents = inversion.schedule, inversion.latents
    residuals = []
    for k, t in enumerate(reversed(schedule.timesteps)):
        previous, latent = latents[k], latents[k + 1]
        again = schedule.inverse_step(model.predict_noise(latent, t, prompt_embedding), t, previous)
        residuals.append(float((latent - again).norm() / latent.norm()))
    return sum(residuals) / len(residuals)
