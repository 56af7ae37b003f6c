"""Frontiers, not points: each method's preservation–editability trade-off over the settings of its knobs.

A method's settings (configurations of one inversion × editor × model on the same data and metric setup that differ
in hyperparameters, as a frontier sweep produces them) each give a point: mean background PSNR (preservation) and
mean CLIP similarity of the edited region (editability) over the samples. Per method:

- its Pareto front: the points no other point of the method beats on both axes (ties are kept);
- its hypervolume: the area the front dominates above a fixed reference point (`REFERENCE`, stated with the table), a
  single number that grows when the front moves up or right; with a paired bootstrap interval (the images are
  resampled, the same draws for every setting, and the front recomputed in each resample);
- editability at matched preservation: the front's CLIP similarity where its PSNR equals a given level (by default
  the preservation of DDIM + P2P at its reference setting when the runs hold it, else the median PSNR of all front
  points), interpolated linearly between neighbouring front points; NaN where the front does not reach that level;
- the setting and the cost (seconds per image) of each point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from invbench.markdown import markdown_table
from reports.caveats import stand_in_notes
from reports.statistics import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Bootstrap

PRESERVATION, EDITABILITY = "psnr_unedit_part", "clip_similarity_target_image_edit_part"
COST = "total_seconds"
# The hypervolume's corner: (background PSNR in dB, CLIP similarity of the edited region x100). Below both is what
# no edit should score (a PSNR of 10 dB is a different image; a CLIP score of 15 is an unrelated one), so every
# method's points dominate it and the hypervolumes of two methods compare.
REFERENCE = (10.0, 15.0)
METHOD_KEYS = ("inversion", "editor", "model", "data", "metrics_setup")
BASELINE = ("ddim", "p2p")  # the matched preservation level comes from this pair's reference setting when present


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point dominates (>= on both axes, > on one), both axes maximised, in
    order of increasing first coordinate. Points with a NaN are never on the front; equal points are all kept."""
    finite = [k for k, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    front = []
    for k in finite:
        x, y = points[k]
        dominated = any(
            points[j][0] >= x and points[j][1] >= y and (points[j][0] > x or points[j][1] > y) for j in finite
        )
        if not dominated:
            front.append(k)
    return sorted(front, key=lambda k: (points[k][0], -points[k][1]))


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float] = REFERENCE) -> float:
    """The area dominated by `points` (both axes maximised) and bounded below by `reference`; points that do not
    exceed the reference on both axes add nothing. 0 for no such point."""
    inside = sorted(
        ((x, y) for x, y in points if not (math.isnan(x) or math.isnan(y)) and x > reference[0] and y > reference[1]),
        key=lambda point: -point[0],
    )
    area, top = 0.0, reference[1]
    for x, y in inside:  # from the largest x down: each point adds the strip its y rises above those seen
        if y > top:
            area += (x - reference[0]) * (y - top)
            top = y
    return area


def at_matched_preservation(front: Sequence[tuple[float, float]], level: float) -> float:
    """The editability of a front (points sorted by preservation) where its preservation equals `level`, linear
    between neighbours; NaN when `level` lies outside the front's range."""
    if not front or math.isnan(level):
        return float("nan")
    xs = [x for x, _ in front]
    if level < min(xs) or level > max(xs):
        return float("nan")
    return float(np.interp(level, xs, [y for _, y in front]))


@dataclass
class MethodFrontier:
    method: dict[str, str]  # METHOD_KEYS -> value
    points: pd.DataFrame  # one row per setting: setting, n, preservation/editability/cost means and intervals
    front: list[int]  # positions in `points`, by increasing preservation
    hypervolume: float
    hypervolume_interval: tuple[float, float]
    matched_editability: float = float("nan")

    @property
    def label(self) -> str:
        return f"{self.method['inversion']} + {self.method['editor']}"


@dataclass
class Frontiers:
    methods: list[MethodFrontier]
    matched_level: float
    matched_source: str
    reference: tuple[float, float] = REFERENCE
    notes: list[str] = field(default_factory=list)


def frontier_groups(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows (from reports.paper.prepare) of each method that ran under at least two settings."""
    groups = []
    for _, part in rows.groupby(list(METHOD_KEYS), sort=False, dropna=False):
        if part["config_hash"].nunique() >= 2:
            groups.append(part)
    return groups


def frontiers(
    rows: pd.DataFrame,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    matched_level: float | None = None,
    reference: tuple[float, float] = REFERENCE,
) -> Frontiers | None:
    """Every method's frontier, or None when no method ran under two settings. `rows` as reports.paper.prepare
    gives them (failed rows are counted, never averaged)."""
    groups = frontier_groups(rows)
    if not groups or not {PRESERVATION, EDITABILITY} <= set(rows.columns):
        return None
    methods = [_method_frontier(part, resamples, confidence, reference) for part in groups]
    if matched_level is None:
        matched_level, source = _default_level(rows, methods)
    else:
        source = "given"
    notes = stand_in_notes(rows, "these fronts")
    for method in methods:
        front = [(p, e) for p, e in method.points.iloc[method.front][[PRESERVATION, EDITABILITY]].to_numpy()]
        method.matched_editability = at_matched_preservation(front, matched_level)
        below = [point for point in front if not (point[0] > reference[0] and point[1] > reference[1])]
        if below:
            notes.append(f"- {method.label}: {len(below)} of its {len(front)} front points are not above the reference "
                         "point, and add nothing to its hypervolume (aggregate.py --frontier-reference sets another)")  # fmt: skip
    return Frontiers(methods, matched_level, source, reference, notes)


def _method_frontier(part: pd.DataFrame, resamples: int, confidence: float, reference) -> MethodFrontier:
    ok = part[part["status"] == "ok"]
    plan = Bootstrap.plan(ok["sample_id"] if len(ok) else part["sample_id"], resamples, confidence)
    points, aligned = [], {}
    for digest, setting in part.groupby("config_hash", sort=False):
        good = setting[setting["status"] == "ok"]
        point = {"config_hash": digest, "setting": setting["variant"].iloc[0] or "(default)", "n": len(good),
                 "failed": int((setting["status"] != "ok").sum())}  # fmt: skip
        for key in (PRESERVATION, EDITABILITY, COST):
            values = good.set_index("sample_id")[key] if key in good else pd.Series(dtype=float)
            values = values[~values.index.duplicated(keep="last")].astype(float)
            aligned[digest, key] = plan.align(values)
            point[key] = float(values.mean()) if len(values) else float("nan")
            point[f"{key}_low"], point[f"{key}_high"] = plan.interval(aligned[digest, key])
        points.append(point)
    table = pd.DataFrame(points)
    coordinates = list(zip(table[PRESERVATION], table[EDITABILITY], strict=True))
    front = pareto_front(coordinates)
    volume = hypervolume([coordinates[k] for k in front], reference)
    # paired bootstrap of the hypervolume: each resample's means per setting, then that resample's front
    digests = list(table["config_hash"])
    means = {key: np.stack([plan.means(aligned[d, key]) for d in digests]) for key in (PRESERVATION, EDITABILITY)}
    volumes = []
    for b in range(plan.draws.shape[0]):
        resampled = list(zip(means[PRESERVATION][:, b], means[EDITABILITY][:, b], strict=True))
        volumes.append(hypervolume([resampled[k] for k in pareto_front(resampled)], reference))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(volumes, [tail, 100 - tail]) if volumes else (float("nan"), float("nan"))
    method = {key: str(part[key].iloc[0]) for key in METHOD_KEYS}
    return MethodFrontier(method, table, front, volume, (float(low), float(high)))


def _default_level(rows: pd.DataFrame, methods: list[MethodFrontier]) -> tuple[float, str]:
    baseline = rows[(rows["inversion"] == BASELINE[0]) & (rows["editor"] == BASELINE[1]) & (rows["status"] == "ok")]
    if len(baseline) and "variant" in baseline:
        default = baseline[baseline["variant"].isin(["", "(default)"])]
        if not len(default) and "hparams" in baseline:  # in a frontier sweep every setting differs: find P2P's own
            default = baseline[baseline["hparams"].map(_is_p2p_reference)]
        if len(default) and default[PRESERVATION].notna().any():
            return float(default[PRESERVATION].mean()), "DDIM + P2P at its reference setting"
    front_points = [p for m in methods for p in m.points.iloc[m.front][PRESERVATION] if not math.isnan(p)]
    if front_points:
        return float(np.median(front_points)), "the median preservation of all front points"
    return float("nan"), "no front point"


def _is_p2p_reference(hparams) -> bool:
    editor = hparams.get("editor", {}) if isinstance(hparams, dict) else {}
    return editor.get("cross_replace_steps") == 0.4 and editor.get("self_replace_steps") == 0.6


def frontier_rows(result: Frontiers) -> pd.DataFrame:
    """One row per method: the table aggregate.py writes (CSV; the Markdown and LaTeX show the same)."""
    lines = []
    for method in result.methods:
        front = method.points.iloc[method.front]
        lines.append(
            {
                **method.method,
                "settings": len(method.points),
                "front_points": len(front),
                "hypervolume": method.hypervolume,
                "hypervolume_low": method.hypervolume_interval[0],
                "hypervolume_high": method.hypervolume_interval[1],
                "editability_at_matched_preservation": method.matched_editability,
                "front_settings": " ; ".join(front["setting"]),
                "front_seconds": " ; ".join(f"{s:.2f}" for s in front[COST]),
            }
        )
    return pd.DataFrame(lines)


def frontier_points(result: Frontiers) -> pd.DataFrame:
    """Every setting of every method with its means, intervals, cost and whether it is on the front."""
    frames = []
    for method in result.methods:
        points = method.points.copy()
        points.insert(0, "editor", method.method["editor"])
        points.insert(0, "inversion", method.method["inversion"])
        points["on_front"] = [k in method.front for k in range(len(points))]
        frames.append(points)
    return pd.concat(frames, ignore_index=True)


def frontier_markdown(result: Frontiers) -> str:
    rows = []
    for method in result.methods:
        low, high = method.hypervolume_interval
        front = method.points.iloc[method.front]
        steps = "<br>".join(
            f"{r.setting}: {getattr(r, PRESERVATION):.2f} dB, {getattr(r, EDITABILITY):.2f}, {getattr(r, COST):.2f} s"
            for r in front.itertuples()
        )
        rows.append([method.label, method.method["model"], f"{len(front)} of {len(method.points)}",
                     f"{method.hypervolume:.2f} [{low:.2f}, {high:.2f}]", _number(method.matched_editability),
                     steps])  # fmt: skip
    header = ["method", "model", "on the front", "hypervolume [interval]",
              f"CLIP edited at PSNR {_number(result.matched_level)} dB", "front: setting: PSNR, CLIP edited, seconds"]  # fmt: skip
    notes = [
        (
            f"- Preservation: background PSNR (dB, `{PRESERVATION}`); editability: CLIP similarity of the edited region "
            f"(`{EDITABILITY}`); both up is better. Hypervolume above the reference point (PSNR {result.reference[0]:g} "
            f"dB, CLIP {result.reference[1]:g}), with its paired bootstrap interval over images."
        ),
        (
            f"- Matched preservation: PSNR {_number(result.matched_level)} dB ({result.matched_source}); '-' where a "
            "front does not reach it."
        ),
        *result.notes,
    ]
    return (
        "\n".join(["**Frontiers: preservation vs editability**", "", markdown_table(header, rows), "", *notes]) + "\n"
    )


def frontier_latex(result: Frontiers) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")

    lines = ["\\begin{tabular}{llrrr}", "\\toprule",
             f"Method & Model & Front & Hypervolume & CLIP edited at {_number(result.matched_level)} dB \\\\",
             "\\midrule"]  # fmt: skip
    for method in result.methods:
        low, high = method.hypervolume_interval
        lines.append(
            f"{escape(method.label)} & {escape(method.method['model'])} & {len(method.front)}/{len(method.points)} & "
            f"{method.hypervolume:.2f} [{low:.2f}, {high:.2f}] & {_number(method.matched_editability)} \\\\"
        )
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"
