"""Frontier sweeps: the knob settings a sweep expands each job into (hydra_plugins/invbench_sweeper).

A method declares its trade-off knobs in its YAML (`frontier: {<hyperparameter>: {low, high, scale}}`, checked by
the registry like any hyperparameter). `experiment=frontier` sets the run-level `frontier:` node:

- `points`: settings per knob, from low to high, ends included;
- `mode`: `line` (default) moves every declared knob of a method together, point k setting each knob to its k-th
  value: `points` jobs per method, one curve from one end of its trade-off to the other; `grid` crosses the knobs'
  values (`points` to the power of the number of knobs);
- `axes`: whose knobs move (`[editor]` by default; `[inversion, editor]` for both);
- `include_default`: also run the method at its configured (reference) setting, so that the table shows where the
  published point sits on its own curve (default true);
- `mode: optuna` searches instead of stepping: `trials` settings per method chosen one after another by Optuna's
  multi-objective sampler from the results of the settings before (orchestration/frontier_search.py), `seed` fixing
  its choices, `batch` trials of each method launched together.

A knob the command line already sets is held where it is set, and the others move. Every expanded job passes the
same checks as any job of a sweep before any is launched.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from invbench.errors import ConfigError
from invbench.hyperparameters import Knob

MODES = ("line", "grid", "optuna")
SETTINGS = {"points", "mode", "axes", "include_default", "trials", "seed", "batch"}


def check_frontier(frontier: Mapping[str, Any]) -> None:
    """The run-level `frontier:` node's own settings (the knobs themselves are the methods')."""
    if not isinstance(frontier, Mapping):
        raise ConfigError(f"frontier must be a mapping of {sorted(SETTINGS)} (experiment=frontier sets it)")
    if unknown := set(frontier) - SETTINGS:
        raise ConfigError(f"frontier.{min(unknown)}: not a frontier setting; they are {sorted(SETTINGS)}")
    if frontier.get("mode", "line") not in MODES:
        raise ConfigError(f"frontier.mode={frontier.get('mode')!r} is not one of {list(MODES)}")
    axes = frontier.get("axes", ["editor"])
    if not isinstance(axes, Sequence) or isinstance(axes, str) or set(axes) - {"inversion", "editor"}:
        raise ConfigError(f"frontier.axes={axes}: a list of inversion and/or editor, the axes that declare knobs")
    for key, least in (("points", 2), ("trials", 1), ("batch", 1)):
        value = frontier.get(key, least)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"frontier.{key}={value!r}: an integer, at least {least}")


def moving_knobs(
    methods: Mapping[str, Mapping[str, Any]], frontier: Mapping[str, Any], fixed: Sequence[str]
) -> list[tuple[str, Knob]]:
    """(override key, knob) of each knob that one job's frontier moves: those its methods declare on the frontier's
    axes, less those the job's own overrides (`fixed`) set. `methods`: the job's composed inversion and editor."""
    from editors import EDITORS
    from inversions import INVERSIONS

    check_frontier(frontier)
    already = {override.split("=", 1)[0].lstrip("+") for override in fixed}
    moving = []
    for axis in frontier.get("axes", ["editor"]):
        registry = {"inversion": INVERSIONS, "editor": EDITORS}[axis]
        for knob in registry.knobs(methods[axis], axis):
            if f"{axis}.{knob.name}" not in already:
                moving.append((f"{axis}.{knob.name}", knob))
    return moving


def knob_settings(
    methods: Mapping[str, Mapping[str, Any]], frontier: Mapping[str, Any], fixed: Sequence[str]
) -> list[list[str]]:
    """The override lists (`editor.<knob>=<value>` ...) of one job's frontier points (modes line and grid); [[]]
    when nothing moves. `methods`: the job's composed inversion and editor nodes; `fixed`: the job's overrides."""
    points, mode = int(frontier.get("points", 3)), frontier.get("mode", "line")
    if mode not in ("line", "grid"):
        raise ConfigError(f"frontier.mode={mode!r} is not one of ['line', 'grid'] here")
    moving = [(key, knob.values(points)) for key, knob in moving_knobs(methods, frontier, fixed)]
    if not moving:
        return [[]]
    default = [[]] if frontier.get("include_default", True) else []
    if mode == "grid":
        combos = itertools.product(*(values for _, values in moving))
        return default + [
            [f"{key}={value}" for (key, _), value in zip(moving, combo, strict=True)] for combo in combos
        ]
    length = max(len(values) for _, values in moving)  # an integer knob may have fewer distinct values

    def at(values: list, k: int):
        return values[round(k * (len(values) - 1) / (length - 1))] if length > 1 else values[0]

    lines = [[f"{key}={at(values, k)}" for key, values in moving] for k in range(length)]
    return default + [line for k, line in enumerate(lines) if line not in lines[:k]]
