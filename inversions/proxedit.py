"""ProxEdit, proximal guidance (Han et al., "ProxEdit: Improving Tuning-Free Real Image Editing with Proximal
Guidance", WACV 2024; arXiv 2306.05414 "Improving Negative-Prompt Inversion via Proximal Guidance"), on top of
negative-prompt or null-text inversion, as PIE-Bench runs it (`proximal_guidance_forward`, prox l0, quantile 0.75,
recon_lr 1, recon_t 400; pie-bench-protocol.md §4).

Contract: the base inversion (`base`, a full inversion config: npi or nti) runs unchanged; editing then uses this
sampler at every step, in every branch: with δ = ε_c − ε_u and τ the `quantile` of |δ|, the guidance term is
prox(δ), ε = ε_u + w · prox(δ). Below t = `recon_t`, in the elements the proximal step left unedited (dilated by
`dilate_mask` latent pixels), two pulls toward the source of strength `recon_lr` can act: reconstruction guidance
moves the predicted x̂_0 toward the source latent z_0 before the DDIM step completes, and inversion guidance moves the
stepped latent toward the inversion trajectory z*_{t−Δ}.

`proxedit` (the default) is the reference's run (models/p2p/proximal_guidance_forward.py, called by p2p_editor.py
with prox l0, quantile 0.75, recon_lr 1, recon_t 400, dilate_mask 1): `operators: reference` — its "l0" is a soft
threshold, δ − clamp(δ, ±τ), and its "l1" applies that, then shifts values above 0 down by τ and, after that,
values below 0 up by τ (element by element, in that order); τ is one quantile over the whole batch
(`quantile_scope: batch`); and both pulls are inert there (the edit call passes no image latent, and does not pass
the inversion-guidance flag), so they are off (`reconstruction_guidance`, `inversion_guidance` false).
`proxedit_paper` (conf/inversion/proxedit_paper.yaml) is the paper's method instead: `operators: paper` (l0 keeps δ
where |δ| > τ, the hard threshold; l1 shrinks δ toward 0 by τ, the soft threshold), τ per branch, and both pulls on.
UNet evaluations: the base inversion's, plus 2 per branch per editing step (the proximal step needs ε_u and ε_c
even at guidance 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F

from invbench.errors import ConfigError
from invbench.hyperparameters import Count, NonNegative, Range
from invbench.models import EPSILON_UNETS, DiffusionModel
from inversions.base import INVERSIONS, CombinedHooks, Inversion, InversionResult, StepHooks
from pie_bench import Sample


def proximal(
    delta: torch.Tensor, prox: str, quantile: float, operators: str = "paper", scope: str = "branch"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prox(δ), τ) for δ of shape (branches, C, h, w); τ is the `quantile` of |δ| per branch or over the batch,
    shaped to broadcast. See the module docstring for the reference's and the paper's operators."""
    if scope == "branch":
        threshold = delta.abs().flatten(1).quantile(quantile, dim=1).view(-1, 1, 1, 1)
    else:
        threshold = delta.abs().quantile(quantile)
    if operators == "reference":
        shrunk = delta - delta.clamp(-threshold, threshold)
        if prox == "l1":
            shrunk = torch.where(shrunk > 0, shrunk - threshold, shrunk)
            shrunk = torch.where(shrunk < 0, shrunk + threshold, shrunk)
        return shrunk, threshold
    if prox == "l0":
        return torch.where(delta.abs() > threshold, delta, torch.zeros_like(delta)), threshold
    return delta.sign() * (delta.abs() - threshold).clamp(min=0), threshold


@dataclass(frozen=True)
class ProximalSettings:
    """What a proximal-guidance step needs (ProxEdit's, and SPDInv's editing, which is the same step)."""

    prox: str
    operators: str
    quantile: float
    quantile_scope: str
    recon_lr: float
    recon_t: int
    dilate_mask: int
    reconstruction_guidance: bool
    inversion_guidance: bool


@dataclass
class ProximalSampler(StepHooks):
    """The proximal-guidance step (below), pulled toward the source and the trajectory as `settings` say."""

    trajectory: list[torch.Tensor]
    settings: ProximalSettings

    def step(self, schedule, i, t, latents, noise_parts, guidance_scale):
        noise_uncond, noise_cond = noise_parts(latents)
        if noise_uncond is None:  # guidance 1: the proximal step still needs the unconditional prediction
            raise ConfigError("proxedit needs classifier-free guidance; set the editor's guidance_scale above 1")
        settings = self.settings
        guidance, threshold = proximal(
            noise_cond - noise_uncond, settings.prox, settings.quantile, settings.operators, settings.quantile_scope
        )
        noise = noise_uncond + guidance_scale * guidance
        if t >= settings.recon_t or not (settings.reconstruction_guidance or settings.inversion_guidance):
            return schedule.step(noise, t, latents)
        # the elements the proximal step edits: where it kept δ (paper), where what it kept exceeds τ (reference)
        edited = (guidance.abs() > threshold if settings.operators == "reference" else guidance != 0).float()
        if settings.dilate_mask > 0:
            size = 2 * settings.dilate_mask + 1
            edited = F.max_pool2d(edited, size, stride=1, padding=settings.dilate_mask)
        keep_source = 1 - edited
        source, on_trajectory = self.trajectory[0], self.trajectory[len(self.trajectory) - i - 2]

        def pull_x0(x0: torch.Tensor) -> torch.Tensor:
            return x0 - settings.recon_lr * (x0 - source) * keep_source

        stepped = schedule.step(noise, t, latents, pull_x0 if settings.reconstruction_guidance else None)
        if settings.inversion_guidance:
            stepped = stepped - settings.recon_lr * (stepped - on_trajectory) * keep_source
        return stepped


@INVERSIONS.register("proxedit")
@dataclass
class ProxEdit(Inversion):
    families = EPSILON_UNETS
    base: dict[str, Any]
    prox: Literal["l0", "l1"]
    operators: Literal["reference", "paper"]
    quantile: Annotated[float, Range(low=0, high=1, low_open=True, high_open=True)]
    quantile_scope: Literal["batch", "branch"]
    recon_lr: NonNegative
    recon_t: Count
    dilate_mask: Count
    reconstruction_guidance: bool
    inversion_guidance: bool

    def __post_init__(self) -> None:
        if self.base.get("name") not in ("npi", "nti"):
            raise ConfigError("conf/inversion/proxedit*.yaml: base.name must be npi or nti (ProxEdit's two bases)")
        self._base = INVERSIONS.build(self.base, key="inversion.base")

    def state(self) -> frozenset[str]:
        return self._base.state() | {"step"}

    guidance_key = "base.guidance_scale"

    def tuned_for_guidance(self) -> float | None:
        return self._base.tuned_for_guidance()

    def needs_unconditional_half(self) -> bool:
        return True  # the proximal step thresholds ε_c − ε_u

    def invert(self, model: DiffusionModel, image_latent: torch.Tensor, sample: Sample) -> InversionResult:
        inverted = self._base.invert(model, image_latent, sample)
        settings = ProximalSettings(**{name: getattr(self, name) for name in ProximalSettings.__dataclass_fields__})
        inverted.hooks = CombinedHooks(inverted.hooks, ProximalSampler(inverted.latents, settings))
        inverted.info = {**inverted.info, "base": self.base["name"]}
        return inverted
