"""RF-Edit (Wang et al., "Taming Rectified Flow for Inversion and Editing", ICML 2025; official code
wangjiangshan0725/RF-Solver-Edit, FLUX_Image_Edit/src/flux/modules/layers.py and sampling.py): self-attention value
sharing on FLUX. FireFlow's editing (Deng et al., ICML 2025, src/flux/modules/layers.py, `reuse_v`) is the same
operation with other blocks and steps (`editor=fireflow_edit`).

Contract: while the flow inversion runs (`observe_inversion`, which hands them to the inversion result's
`observed`), the values of the FLUX single-stream blocks
`first_single_block` … `last_single_block` are recorded at every evaluation of the inversion steps that pair with
the first `inject` denoising steps; in those denoising steps each evaluation attends over the values the inversion
computed in the same step at the same stage (the step's start, or its midpoint for the second-order solvers), in
every branch; a stage the inversion did not evaluate (FireFlow reuses its midpoint velocity) injects nothing, as in
the reference. The step is the inversion's own (Euler, RF-Solver or FireFlow via its step hooks), so it pairs with
`inversion=flow`, `rf_solver` or `fireflow` only. `inject: 0` is `editor=direct`.
Differences from the reference: the reference denoises the target alone; here a source branch runs next to it (the
reconstruction columns), with the same injection. Cost: the evaluations of `direct`; memory: the recorded values
(1 GB on FLUX.1-dev at 512² with RF-Solver's 3 steps, kept on the device).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from editors.base import EDITORS, Editor, EditResult, denoise_branches
from invbench.attention import AttentionController, AttentionSite, attention_control
from invbench.errors import ConfigError
from invbench.hyperparameters import Count, Guidance
from invbench.models import DiffusionModel
from inversions.base import Inversion, InversionResult
from pie_bench import Sample

SIGMA_TOLERANCE = 1e-4  # evaluations match by noise level; grid levels are ≥ 1/N apart
VALUES = "rf_edit_values"  # the key of the recorded values in InversionResult.observed: {(σ, layer): values}


class _EvaluationLevel:
    """The noise level σ of the denoiser call in progress (FLUX takes it as its `timestep` argument)."""

    def __init__(self, denoiser: torch.nn.Module):
        self.sigma: float | None = None
        self._hook = denoiser.register_forward_pre_hook(self._read, with_kwargs=True)

    def _read(self, module, args, kwargs) -> None:
        self.sigma = float(kwargs["timestep"].reshape(-1)[0])

    def close(self) -> None:
        self._hook.remove()


@dataclass
class _ValueRecorder(AttentionController):
    selected: frozenset[str]
    level: _EvaluationLevel
    lowest: float  # record evaluations at or above this σ: those of the injected steps
    recorded: dict[tuple[float, str], torch.Tensor] = field(default_factory=dict)

    def wants(self, site: AttentionSite) -> bool:
        return False

    def values(self, site: AttentionSite, value: torch.Tensor) -> torch.Tensor:
        if site.name in self.selected and self.level.sigma >= self.lowest - SIGMA_TOLERANCE:
            self.recorded[(self.level.sigma, site.name)] = value.detach().clone()
        return value


@dataclass
class _ValueInjector(AttentionController):
    recorded: dict[tuple[float, str], torch.Tensor]
    level: _EvaluationLevel
    sigmas: list[float]  # the grid, σ_0 = 1 … σ_N = 0
    inject: int

    def __post_init__(self) -> None:
        self.by_site: dict[str, list[tuple[float, torch.Tensor]]] = {}  # each attention call looks up its own layer
        for (sigma, name), stored in self.recorded.items():
            self.by_site.setdefault(name, []).append((sigma, stored))

    def wants(self, site: AttentionSite) -> bool:
        return False

    def values(self, site: AttentionSite, value: torch.Tensor) -> torch.Tensor:
        if self.step >= self.inject or site.name not in self.by_site:
            return value
        sigma = self.level.sigma
        # the step's start (σ_i) pairs with the inversion step's start, one level lower (σ_{i+1}); a midpoint with
        # the inversion's midpoint at the same level
        at_start = abs(sigma - self.sigmas[self.step]) < SIGMA_TOLERANCE
        wanted = self.sigmas[self.step + 1] if at_start else sigma
        for recorded_sigma, stored in self.by_site[site.name]:
            if abs(recorded_sigma - wanted) < SIGMA_TOLERANCE:
                return stored.expand_as(value)
        return value


@EDITORS.register("rf_edit")
@dataclass
class RFEdit(Editor):
    families = frozenset({"flux"})
    pairs_with = frozenset({"flow", "rf_solver", "fireflow"})
    guidance_scale: Guidance
    inject: Count  # the first denoising steps with value sharing
    first_single_block: Count
    last_single_block: Count

    def _block_problem(self, model_name: str, available: int) -> str | None:
        if self.first_single_block <= self.last_single_block < available:
            return None
        return (
            f"editor={self.name}: single-stream blocks {self.first_single_block}..{self.last_single_block} are not "
            f"all in model={model_name}, which has {available} (0..{available - 1}); set editor.first_single_block "
            "and editor.last_single_block within them"
        )

    def model_problems(self, model_config: Mapping[str, Any]) -> list[str]:
        # random models say it in their YAML; FLUX.1's checkpoints (dev, schnell) have 38 single-stream blocks
        transformer = model_config.get("transformer") or {}
        available = transformer.get("num_single_layers", 38 if model_config.get("kind") == "flux" else None)
        problem = None if available is None else self._block_problem(model_config["name"], available)
        return [] if problem is None else [problem]

    def _selected(self, model: DiffusionModel) -> frozenset[str]:
        problem = self._block_problem(model.name, len(model.denoiser.single_transformer_blocks))
        if problem is not None:
            raise ConfigError(problem)
        blocks = range(self.first_single_block, self.last_single_block + 1)
        return frozenset(f"single_transformer_blocks.{index}.attn" for index in blocks)

    @contextmanager
    def observe_inversion(self, model: DiffusionModel, inversion: Inversion) -> Iterator[dict[str, Any]]:
        """Records the selected blocks' values while the inversion runs; yields the dict that carries them, under
        VALUES, into the inversion result's `observed`."""
        schedule = model.schedule(inversion.num_steps)
        sigmas = [float(schedule.sigma(t)) for t in schedule.timesteps] + [0.0]
        level = _EvaluationLevel(model.denoiser)
        recorder = _ValueRecorder(self._selected(model), level, lowest=sigmas[min(self.inject, len(sigmas) - 1)])
        observed: dict[str, Any] = {}
        try:
            with attention_control(model.denoiser, recorder, model.backbone.latent_side):
                yield observed
        finally:
            level.close()
        observed[VALUES] = recorder.recorded if self.inject else {}

    def edit(self, model: DiffusionModel, inversion: InversionResult, sample: Sample) -> EditResult:
        recorded = inversion.observed.get(VALUES)
        if recorded is None and self.inject:
            raise ConfigError(
                f"editor={self.name} injects the values recorded while the inversion ran: invert inside "
                "editor.observe_inversion(model, inversion) and store what it yields as the result's `observed` (the "
                "runner does)"
            )
        schedule = inversion.schedule
        sigmas = [float(schedule.sigma(t)) for t in schedule.timesteps] + [0.0]
        cond = model.encode_prompts([sample.source_prompt, sample.target_prompt])
        level = _EvaluationLevel(model.denoiser)
        try:
            injector = _ValueInjector(recorded or {}, level, sigmas, self.inject)
            latents = denoise_branches(model, inversion, cond, self.guidance_scale, controller=injector)
        finally:
            level.close()
        return EditResult(edited=latents[1:], reconstruction=latents[:1])
