"""Frontier sweeps: the knob settings a sweep expands each job into (hydra_plugins/invbench_sweeper).

A method declares its trade-off knobs in its YAML (`frontier: {<hyperparameter>: {low, high, scale}}`, checked by
the registry like any hyperparameter). `experiment=frontier` sets the run-level `frontier:` node:

- `points`: settings per knob, from low to high, ends included;
- `mode`: `line` (default) moves every declared knob of a method together, point k setting each knob to its k-th
  value: `points` jobs per method, one curve from one end of its trade-off to the other; `grid` crosses the knobs'
  values (`points` to the power of the number of knobs);
- `axes`: whose knobs move (`[editor]` by default; `[inversion, editor]` for both);
- `include_default`: also run the method at its configured (reference) setting, so that the table shows where the
  published point sits on its own curve (default true).

A knob the command line already sets is held where it is set, and the others move. Every expanded job passes the
same checks as any job of a sweep before any is launched.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from invbench.errors import ConfigError

MODES = ("line", "grid")


def knob_settings(
    methods: Mapping[str, Mapping[str, Any]], frontier: Mapping[str, Any], fixed: Sequence[str]
) -> list[list[str]]:
    """The override lists (`editor.<knob>=<value>` ...) of one job's frontier points; [[]] when nothing moves.
    `methods`: the job's composed inversion and editor nodes; `fixed`: the job's own overrides."""
    from editors import EDITORS
    from inversions import INVERSIONS

    points, mode = int(frontier.get("points", 3)), frontier.get("mode", "line")
    axes = list(frontier.get("axes", ["editor"]))
    if mode not in MODES:
        raise ConfigError(f"frontier.mode={mode!r} is not one of {list(MODES)}")
    if set(axes) - {"inversion", "editor"}:
        raise ConfigError(f"frontier.axes={axes}: only inversion and editor declare knobs")
    already = {override.split("=", 1)[0].lstrip("+") for override in fixed}
    moving = []  # (override key, its values)
    for axis in axes:
        registry = {"inversion": INVERSIONS, "editor": EDITORS}[axis]
        for knob in registry.knobs(methods[axis], axis):
            if f"{axis}.{knob.name}" not in already:
                moving.append((f"{axis}.{knob.name}", knob.values(points)))
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
