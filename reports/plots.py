"""Figures from a paper table (matplotlib, written as PNG and PDF): the editability / background-preservation
trade-off and the cost per image."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node
import matplotlib.pyplot as plt
import pandas as pd

from reports.paper import PaperTable

EDITABILITY, PRESERVATION = "clip_similarity_target_image_edit_part", "psnr_unedit_part"


def _save(figure, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:
        figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)
    return paths


def _label(row) -> str:
    return row.inversion if row.setup == "a" else f"{row.inversion} [{row.setup}]"


def _plottable(table: PaperTable, needed: list[str]) -> tuple[pd.DataFrame, str]:
    """(the table's cells that have every `needed` value, a footnote naming the methods left out)."""
    cells = table.cells
    keep = cells[needed].notna().all(axis=1) if set(needed) <= set(cells.columns) else pd.Series(False, cells.index)
    left_out = [f"{_label(row)} + {row.editor}" for row in cells[~keep].itertuples()]
    note = f"not shown (no value): {', '.join(dict.fromkeys(left_out))}" if left_out else ""
    return cells[keep], note


def tradeoff_plot(table: PaperTable, out: Path) -> list[Path]:
    """Background PSNR against CLIP similarity of the edited region, one panel per editor, one point per inversion
    with its bootstrap interval on both axes (up and right is better)."""
    cells, left_out = _plottable(table, [EDITABILITY, PRESERVATION])
    editors = list(dict.fromkeys(cells["editor"])) or ["(no method has both values)"]
    figure, axes = plt.subplots(1, len(editors), figsize=(4.2 * len(editors), 3.8), squeeze=False, sharey=True)
    for axis, editor in zip(axes[0], editors):
        for row in cells[cells["editor"] == editor].itertuples():
            x, y = getattr(row, EDITABILITY), getattr(row, PRESERVATION)
            xerr = [[x - getattr(row, f"{EDITABILITY}_low")], [getattr(row, f"{EDITABILITY}_high") - x]]
            yerr = [[y - getattr(row, f"{PRESERVATION}_low")], [getattr(row, f"{PRESERVATION}_high") - y]]
            axis.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=2)
            axis.annotate(_label(row), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.set_title(f"editor: {editor}")
        axis.set_xlabel("CLIP similarity, edited region ↑")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("background PSNR (dB) ↑")
    figure.suptitle(table.title, fontsize=9)
    if left_out:
        figure.text(0.01, -0.06, left_out, fontsize=7, wrap=True)
    return _save(figure, out, "tradeoff_psnr_vs_clip_edited")


def time_plot(table: PaperTable, out: Path) -> list[Path]:
    """Seconds per image (inversion + editing) per method, with UNet evaluations written next to each bar."""
    cells, left_out = _plottable(table, ["total_seconds"])
    cells = cells.sort_values("total_seconds") if len(cells) else cells
    figure, axis = plt.subplots(figsize=(6.5, 0.45 * max(len(cells), 2) + 1))
    labels = [f"{_label(row)} + {row.editor}" for row in cells.itertuples()]
    if cells.empty:
        axis.text(0.5, 0.5, "no method has a time per image", ha="center", va="center", transform=axis.transAxes)
    else:
        axis.barh(labels, cells["total_seconds"], xerr=[
            cells["total_seconds"] - cells["total_seconds_low"], cells["total_seconds_high"] - cells["total_seconds"]
        ], capsize=2)  # fmt: skip
    if "unet_evals" in cells:
        for position, row in enumerate(cells.itertuples()):
            if pd.isna(row.unet_evals):
                continue
            right = row.total_seconds_high if row.total_seconds_high == row.total_seconds_high else row.total_seconds
            axis.annotate(f"{row.unet_evals:.0f} UNet evals", (right, position), xytext=(6, -3),
                          textcoords="offset points", fontsize=8)  # fmt: skip
    axis.set_xlabel("seconds per image ↓ (inversion + editing)" + (f"\n{left_out}" if left_out else ""))
    axis.set_title(table.title, fontsize=9)
    axis.grid(axis="x", alpha=0.3)
    return _save(figure, out, "time_per_image")


def frontier_plot(result, out: Path) -> list[Path]:
    """Every method's settings (faint) and its Pareto front (a line through the front's points, with their bootstrap
    intervals), preservation against editability, on one axes (reports/frontier.py)."""
    from reports.frontier import COST
    from reports.frontier import EDITABILITY as CLIP_EDITED
    from reports.frontier import PRESERVATION as PSNR

    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    for number, method in enumerate(result.methods):
        colour = f"C{number % 10}"
        points = method.points
        axis.scatter(points[CLIP_EDITED], points[PSNR], color=colour, alpha=0.3, s=14)
        front = points.iloc[method.front]
        xerr = [front[CLIP_EDITED] - front[f"{CLIP_EDITED}_low"], front[f"{CLIP_EDITED}_high"] - front[CLIP_EDITED]]
        yerr = [front[PSNR] - front[f"{PSNR}_low"], front[f"{PSNR}_high"] - front[PSNR]]
        ordered = front.sort_values(CLIP_EDITED)
        axis.plot(ordered[CLIP_EDITED], ordered[PSNR], color=colour, marker="o", markersize=4,
                  label=f"{method.label} (HV {method.hypervolume:.1f}; {front[COST].mean():.1f} s)")  # fmt: skip
        axis.errorbar(front[CLIP_EDITED], front[PSNR], xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, alpha=0.5,
                      capsize=2)  # fmt: skip
    if result.matched_level == result.matched_level:  # not NaN
        axis.axhline(result.matched_level, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("CLIP similarity, edited region ↑ (editability)")
    axis.set_ylabel("background PSNR (dB) ↑ (preservation)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    axis.set_title("Frontiers over each method's knob settings (faint: dominated settings)", fontsize=9)
    caveats = [note for note in result.notes if "RANDOM WEIGHTS" in note or "TOY MODEL" in note]
    if caveats:
        figure.text(0.01, -0.04, caveats[0].lstrip("- "), fontsize=7, color="darkred", wrap=True)
    return _save(figure, out, "frontier_psnr_vs_clip_edited")
