"""The inversion contract: what every inversion method produces, and therefore what every editor may consume.

An inversion maps the VAE latent z_0 of a source image to a starting noise latent z_T, so that denoising with the
source prompt comes back to the image. Editors run one *source branch* (source prompt; its output is the
reconstruction) and one or more *target branches* (target prompt) from z_T over the same timesteps, in the fixed loop
`editors.base.denoise_branches`. What a method changes in that loop it writes, in its own file, as `StepHooks`: the
conditioning of the branches at each step, attention controllers of its own, the reverse step itself, and
corrections after each step. The defaults are plain classifier-free-guided DDIM, so a method overrides only what it
needs, and an editor built on the loop works with every inversion.

Which hooks a method's results override is its *state*, declared on the method (`Inversion.state`, checked against
real results by the tests), so that a pairing with an editor that cannot honour them is refused before any job
starts (orchestration/compatibility.py). Per-step hooks are indexed by the denoising step i = 0 .. num_steps-1, i.e. by
timestep `schedule.timesteps[i]`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from invbench.ddim import DDIMSchedule
from invbench.models import DiffusionModel, NoiseParts, classifier_free
from invbench.registry import Registry
from pie_bench import Sample

if TYPE_CHECKING:  # editors/ imports this module: a runtime import would be circular
    from invbench.attention import AttentionController

# The hooks a method may override, with how they are named in messages: its state.
HOOKS: dict[str, str] = {
    "conditioning": "per-step conditioning of the branches",
    "controllers": "attention controllers",
    "step": "its own reverse step",
    "after_step": "corrections after each step",
}


class StepHooks:
    """What an inversion changes in the editor's denoising loop. Subclasses (one per method, in the method's file)
    override what they need; the defaults are plain classifier-free-guided DDIM. The loop, at each step i:
    `conditioning` -> the editor's controllers' `begin_step` / `before_step` -> `step` -> `after_step` -> the
    controllers' `end_step`; the hooks' own `controllers` see every attention call, before the editor's."""

    step_batches: ClassVar[bool] = False
    """For hooks with their own `step`: whether it evaluates `noise_parts` once, on the latents it is given, and
    treats each row on its own, so that several samples' steps can share one denoiser call (`PerSampleHooks`)."""

    def conditioning(self, i: int, cond: torch.Tensor, uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditional and unconditional conditioning of every branch at step i, given the editor's prompts
        `cond` (B, L, D; branch 0 the source) and the empty prompt's `uncond` (B, L, D)."""
        return cond, uncond

    def controllers(self, cond: torch.Tensor) -> list[AttentionController]:
        """Attention controllers of the method for a loop over the branches of `cond` (applied before the
        editor's; they get `begin_step` every step)."""
        return []

    def step(
        self,
        schedule: DDIMSchedule,
        i: int,
        t: int,
        latents: torch.Tensor,
        noise_parts: NoiseParts,
        guidance_scale: float,
    ) -> torch.Tensor:
        """Denoising step i (timestep t): the latents after it. `noise_parts(latents)` evaluates the denoiser with
        the step's conditioning under the controllers -> (ε_uncond or None at guidance 1, ε_cond)."""
        return schedule.step(classifier_free(*noise_parts(latents), guidance_scale), t, latents)

    def after_step(self, i: int, latents: torch.Tensor) -> torch.Tensor:
        """The latents after step i, corrected (may change them in place)."""
        return latents

    def state(self) -> frozenset[str]:
        """The hooks this object overrides (HOOKS names)."""
        return frozenset(name for name in HOOKS if getattr(type(self), name) is not getattr(StepHooks, name))


class CombinedHooks(StepHooks):
    """Several methods' hooks in one loop (e.g. ProxEdit's proximal step on NTI's nulls): conditioning and
    corrections applied in order, controllers concatenated, the step of the one part that overrides it."""

    def __init__(self, *parts: StepHooks):
        steppers = [part for part in parts if "step" in part.state()]
        if len(steppers) > 1:
            raise ValueError("at most one of the combined hooks may override the reverse step")
        self.parts, self.stepper = parts, (steppers[0] if steppers else StepHooks())

    def conditioning(self, i, cond, uncond):
        for part in self.parts:
            cond, uncond = part.conditioning(i, cond, uncond)
        return cond, uncond

    def controllers(self, cond):
        return [controller for part in self.parts for controller in part.controllers(cond)]

    def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
        return self.stepper.step(schedule, i, t, latents, noise_parts, guidance_scale)

    def after_step(self, i, latents):
        for part in self.parts:
            latents = part.after_step(i, latents)
        return latents

    def state(self) -> frozenset[str]:
        return frozenset().union(*(part.state() for part in self.parts))


class PerSampleHooks(StepHooks):
    """The hooks of several samples' inversions in one loop whose batch holds each sample's `branches` branches in
    turn (sample 0's source and targets, then sample 1's, ...): each sample's conditioning and corrections are applied
    to its own rows. Only per-row hooks combine this way: hooks with controllers do not batch, nor do those with
    their own step unless it declares `step_batches` (each sample's step then reads its rows of one shared call)."""

    def __init__(self, parts: Sequence[StepHooks], branches: int):
        if not all(self.combines(part) for part in parts):
            raise ValueError("hooks with attention controllers or their own step cannot be batched across samples")
        self.parts, self.branches = list(parts), branches

    @staticmethod
    def combines(part: StepHooks) -> bool:
        state = part.state()
        return "controllers" not in state and ("step" not in state or part.step_batches)

    def _rows(self, k: int) -> slice:
        return slice(k * self.branches, (k + 1) * self.branches)

    def conditioning(self, i, cond, uncond):
        pairs = [part.conditioning(i, cond[self._rows(k)], uncond[self._rows(k)]) for k, part in enumerate(self.parts)]
        return torch.cat([c for c, _ in pairs]), torch.cat([u for _, u in pairs])

    def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
        if not any("step" in part.state() for part in self.parts):
            return super().step(schedule, i, t, latents, noise_parts, guidance_scale)
        uncond, cond = noise_parts(latents)  # one denoiser call for every sample

        def rows_of(k: int) -> NoiseParts:
            rows = self._rows(k)
            return lambda _latents: (None if uncond is None else uncond[rows], cond[rows])

        steps = [part.step(schedule, i, t, latents[self._rows(k)], rows_of(k), guidance_scale)
                 for k, part in enumerate(self.parts)]  # fmt: skip
        return torch.cat(steps)

    def after_step(self, i, latents):
        return torch.cat([part.after_step(i, latents[self._rows(k)]) for k, part in enumerate(self.parts)])

    def state(self) -> frozenset[str]:
        return frozenset().union(*(part.state() for part in self.parts))


@dataclass
class UnconditionalEmbeddings(StepHooks):
    """Per-step unconditional embeddings (1, L, D) for classifier-free guidance: null-text-style methods (NTI) and
    those editing with the source prompt as the unconditional embedding (NPI, SPDInv, pix2pix-zero's caption), in
    every branch or (`branches="source"`) the source branch only, the targets keeping ""."""

    embeddings: Sequence[torch.Tensor]
    branches: str = "all"

    def conditioning(self, i, cond, uncond):
        if self.branches == "source":
            return cond, torch.cat([self.embeddings[i], uncond[1:]])
        return cond, self.embeddings[i].expand(cond.shape[0], -1, -1)


@dataclass
class InversionResult:
    schedule: DDIMSchedule
    """The timestep grid the trajectory lives on; editors denoise along exactly these timesteps."""

    latents: list[torch.Tensor]
    """The inversion trajectory z*_0 .. z*_T (num_steps + 1 tensors of shape (1, 4, h, w)). latents[0] is the VAE
    latent of the source; latents[k] (k >= 1) sits at noise level schedule.timesteps[num_steps - k], so denoising
    step i starts from latents[num_steps - i] and ideally lands on latents[num_steps - i - 1]."""

    hooks: StepHooks = field(default_factory=StepHooks)
    """What the method changes in the editor's denoising loop (plain guided DDIM by default)."""

    grid_steps: int | None = None
    """The length of the timestep grid `schedule`'s steps were taken from, where a method runs only its last part
    (edit-friendly DDPM after its skip, EDICT below its strength). Prompt-to-Prompt sizes its windows on it, as those
    methods' references do. None: the schedule's own length."""

    source_tokens: str = "source"
    """Which prompt's tokens the source branch's conditioning is laid out in: "source", or "target" where the
    method tunes its source-branch embedding from the target prompt (PTI). Token-level editors (P2P) align the
    branches' tokens and find the blended words by it."""

    info: dict[str, Any] = field(default_factory=dict)
    """Method-specific numbers for the result row, e.g. optimisation steps actually taken."""

    observed: dict[str, Any] = field(default_factory=dict)
    """What an editor that observes the inversion recorded while it ran (`Editor.observe_inversion`, e.g. RF-Edit's
    attention values): whoever inverts inside that context stores what it yields here; empty otherwise."""

    @property
    def noise_latent(self) -> torch.Tensor:
        return self.latents[-1]

    def state(self) -> frozenset[str]:
        """The hooks (HOOKS names) this result's method overrides."""
        return self.hooks.state()


def encode_posterior(model: DiffusionModel, image: np.ndarray, image_latent: str) -> torch.Tensor:
    """z_0 as a reference encodes it: the VAE posterior mean ("posterior_mean"), or ("posterior_sample") a sample of
    the posterior drawn from the global generator, as `latent_dist.sample()` without a generator draws it."""
    if image_latent == "posterior_mean":
        return model.encode_image(image)
    return model.encode_image(image, generator=torch.default_generator)


class Inversion(ABC):
    """Base class of inversion methods. Subclasses are dataclasses whose fields are their hyperparameters
    (all set from conf/inversion/<name>.yaml) and are registered in `INVERSIONS`."""

    name: ClassVar[str]
    produces: ClassVar[frozenset[str]] = frozenset()  # the hooks (HOOKS names) every result of this method overrides
    guidance_key: ClassVar[str] = "guidance_scale"  # the hyperparameter `tuned_for_guidance` reports
    families: ClassVar[frozenset[str]] = frozenset({"sd"})  # the model families it works on (MODEL_FAMILIES)
    batches: ClassVar[bool] = False  # whether `invert_batch` evaluates several samples in one denoiser call per step

    def encode_source(self, model: DiffusionModel, image: np.ndarray) -> torch.Tensor:
        """The latent z_0 this method inverts, of the uint8 H×W×3 source image: the VAE posterior mean, unless the
        method's reference encodes otherwise."""
        return model.encode_image(image)

    @abstractmethod
    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        """Invert `image_latent` (1, 4, h, w) of `sample`'s source image; may use its prompts and edit class."""

    def invert_batch(
        self, model: DiffusionModel, image_latents: Sequence[torch.Tensor], samples: Sequence[Sample]
    ) -> list[InversionResult]:
        """Invert several samples, each as `invert` would (equal to float rounding). A method that sets `batches`
        evaluates them in one denoiser call per step; the default inverts them one after another."""
        return [self.invert(model, latent, sample) for latent, sample in zip(image_latents, samples, strict=True)]

    def state(self) -> frozenset[str]:
        """The hooks (HOOKS names) this configuration's results override, known from the hyperparameters alone
        (tests check it against real results): what an editor must be able to use."""
        return self.produces

    def tuned_for_guidance(self) -> float | None:
        """The classifier-free guidance scale this method's state is computed for (its hyperparameter
        `guidance_key`): an editor guiding at another scale loses the reconstruction the state exists for.
        None: the state does not depend on it."""
        return None

    def needs_unconditional_half(self) -> bool:
        """Whether the method's reverse step needs the unconditional prediction, i.e. editor guidance above 1."""
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
