"""The result-row columns that hold numbers: each metric and cost defined once (key, kind, the papers' scale, which
direction is better, labels, table group), and the views the runner, score.py and the reports take of them. A new
metric or cost phase is one entry here (and the code that computes it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Column:
    key: str  # the result-row field (unet_evals and unet_backward_evals are sums over the phases, made by reports)
    label: str  # Markdown / CSV header; LaTeX uses `latex`
    latex: str
    scale: float  # the papers' scale factor (pie-bench-protocol.md §2.6)
    higher_is_better: bool
    digits: int = 2
    group: str = ""  # the header group above it in LaTeX, as in the papers
    kind: Literal["metric", "cost"] = "metric"


COLUMNS: dict[str, Column] = {
    column.key: column
    for column in (
        Column("structure_distance", "Structure Distance ×10³", r"Distance$_{\times 10^3}$", 1e3, False,
               group="Structure"),
        Column("psnr_unedit_part", "PSNR", "PSNR", 1, True, group="Background Preservation"),
        Column("lpips_unedit_part", "LPIPS ×10³", r"LPIPS$_{\times 10^3}$", 1e3, False,
               group="Background Preservation"),
        Column("mse_unedit_part", "MSE ×10⁴", r"MSE$_{\times 10^4}$", 1e4, False, group="Background Preservation"),
        Column("ssim_unedit_part", "SSIM ×10²", r"SSIM$_{\times 10^2}$", 1e2, True, group="Background Preservation"),
        Column("clip_similarity_source_image", "CLIP Source", "Source", 1, True, group="CLIP Similarity"),
        Column("clip_similarity_target_image", "CLIP Whole", "Whole", 1, True, group="CLIP Similarity"),
        Column("clip_similarity_target_image_edit_part", "CLIP Edited", "Edited", 1, True, group="CLIP Similarity"),
        Column("reconstruction_psnr", "Reconstruction PSNR", "PSNR", 1, True, group="Reconstruction"),
        Column("reconstruction_lpips", "Reconstruction LPIPS ×10³", r"LPIPS$_{\times 10^3}$", 1e3, False,
               group="Reconstruction"),
        Column("reconstruction_mse", "Reconstruction MSE", "MSE", 1, False, group="Reconstruction"),
        Column("reconstruction_ssim", "Reconstruction SSIM ×10²", r"SSIM$_{\times 10^2}$", 1e2, True,
               group="Reconstruction"),
        Column("total_seconds", "Time (s/image)", "s/image", 1, False, group="Cost", kind="cost"),
        Column("inversion_seconds", "Inversion (s)", "inversion s", 1, False, group="Cost", kind="cost"),
        Column("edit_seconds", "Edit (s)", "edit s", 1, False, group="Cost", kind="cost"),
        Column("inversion_unet_evals", "Inversion UNet evals", "inversion evals", 1, False, 0, "Cost", "cost"),
        Column("edit_unet_evals", "Edit UNet evals", "edit evals", 1, False, 0, "Cost", "cost"),
        Column("inversion_unet_backward_evals", "Inversion UNet backward", "inversion backward", 1, False, 0, "Cost",
               "cost"),
        Column("edit_unet_backward_evals", "Edit UNet backward", "edit backward", 1, False, 0, "Cost", "cost"),
        Column("unet_evals", "UNet evals", "UNet evals", 1, False, 0, "Cost", "cost"),
        Column("unet_backward_evals", "UNet backward", "backward", 1, False, 0, "Cost", "cost"),
        Column("peak_memory_mb", "Peak memory (MB)", "MB", 1, False, 0, "Cost", "cost"),
        Column("largest_attention_map_mb", "Largest attention map (MB)", "map MB", 1, False, 0, "Cost", "cost"),
    )
}  # fmt: skip

INF = float("inf")
# The values each number column can hold (NaN is always allowed: a metric with nothing to measure, e.g. no
# unedited region): distances, errors, seconds, counts and memory are never negative, SSIM lies in [-1, 1], and CLIP
# similarity is 100 x a cosine clipped at 0. PSNR may be +inf (identical images).
VALID_RANGES: dict[str, tuple[float, float]] = {key: (0.0, INF) for key in COLUMNS} | {
    "ssim_unedit_part": (-1.0, 1.0),
    "reconstruction_ssim": (-1.0, 1.0),
    "clip_similarity_source_image": (0.0, 100.0),
    "clip_similarity_target_image": (0.0, 100.0),
    "clip_similarity_target_image_edit_part": (0.0, 100.0),
    "metrics_seconds": (0.0, INF),
    "batch_size": (1.0, INF),
}
# The text fields every reader relies on, and the values `status` takes
TEXT_FIELDS = ("sample_id", "inversion", "editor", "model", "config_hash", "metrics_setup", "category", "error")
STATUSES = ("ok", "failed")


def row_problems(row: dict) -> list[str]:
    """Why a result row does not fit the schema: 'field 'x': value ... is not ...' for each field of the wrong type
    or out of its range ([] when it fits). Fields a row lacks are not checked (rows of another kind lack many)."""
    import math

    problems = []
    if row.get("status") not in STATUSES:
        problems.append(f"field 'status': {row.get('status')!r} is not one of {', '.join(STATUSES)}")
    for field in TEXT_FIELDS:
        if field in row and row[field] is not None and not isinstance(row[field], str):
            problems.append(f"field '{field}': {row[field]!r} is not text")
    for field, (low, high) in VALID_RANGES.items():
        value = row.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"field '{field}': {value!r} is not a number")
        elif not math.isnan(value) and not low <= value <= high:
            problems.append(f"field '{field}': {value!r} is outside [{low:g}, {high:g}]")
    return problems


# What a metric suite writes per sample (metrics/pie_bench.py), in its order
METRIC_COLUMNS = tuple(key for key, column in COLUMNS.items() if column.kind == "metric")
# The mean table (reports/tables.py): metrics at the papers' scale, then the costs the runner records
MEAN_TABLE_METRICS = (
    "structure_distance", "psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part",
    "clip_similarity_target_image", "clip_similarity_target_image_edit_part",
    "reconstruction_psnr", "reconstruction_lpips", "reconstruction_ssim",
)  # fmt: skip
MEAN_TABLE_COSTS = (
    "total_seconds", "inversion_seconds", "edit_seconds", "inversion_unet_evals", "edit_unet_evals",
    "inversion_unet_backward_evals", "edit_unet_backward_evals", "peak_memory_mb",
)  # fmt: skip
# The papers' table (reports/paper.py): TODInv Table 1's metrics, then the cost summary
PAPER_TABLE = (
    "structure_distance", "psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part",
    "clip_similarity_target_image", "clip_similarity_target_image_edit_part",
    "total_seconds", "unet_evals", "unet_backward_evals", "peak_memory_mb",
)  # fmt: skip
