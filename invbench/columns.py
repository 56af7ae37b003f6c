"""The result-row columns that hold numbers: each metric and cost defined once (key, kind, the papers' scale, which
direction is better, labels, table group), and the views the runner, evaluate.py and the reports take of them. A new
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
    )
}  # fmt: skip

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
