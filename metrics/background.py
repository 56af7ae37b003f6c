"""Pixel-space fidelity metrics: PSNR, LPIPS, MSE and SSIM, over the whole image or its unedited part.

PIE-Bench's "unedited part" metrics (pie-bench-protocol.md §2.3) multiply *both* images by (1 - mask) in [0, 1]
and score the full image: the zeroed edited region stays in every average (nothing is normalised by area). When
nothing is unedited ((1 - mask) is all zero, e.g. a whole-image style edit) the values are NaN. PSNR uses data
range 1 (10·log10(1 / MSE)), MSE is the mean over all C·H·W values, SSIM has torchmetrics' defaults (Gaussian
window 11, σ 1.5, k1 0.01, k2 0.03), LPIPS takes the masked images mapped to [-1, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

PIXEL_METRICS = ("psnr", "lpips", "mse", "ssim")


def to_unit_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 H×W×3 -> float32 (1, 3, H, W) in [0, 1]."""
    return torch.tensor(image, device=device).permute(2, 0, 1)[None].float().contiguous() / 255


@torch.no_grad()
def pixel_metrics(
    image_a: np.ndarray,
    image_b: np.ndarray,
    lpips_network: torch.nn.Module,
    keep: np.ndarray | None = None,
) -> dict[str, float]:
    """PSNR / LPIPS / MSE / SSIM between two uint8 images; `keep` (H×W, 1 = scored) multiplies both first."""
    if image_a.shape != image_b.shape:
        raise ValueError(f"images differ in shape: {image_a.shape} vs {image_b.shape}")
    if keep is not None and not keep.any():
        return dict.fromkeys(PIXEL_METRICS, math.nan)
    device = next(lpips_network.parameters()).device
    a, b = to_unit_tensor(image_a, device), to_unit_tensor(image_b, device)
    if keep is not None:
        weight = torch.from_numpy(keep.astype(np.float32)).to(device)
        a, b = a * weight, b * weight
    return {
        "psnr": peak_signal_noise_ratio(a, b, data_range=1.0).item(),
        "lpips": lpips_network(a * 2 - 1, b * 2 - 1).item(),
        "mse": mean_squared_error(a, b).item(),
        "ssim": structural_similarity_index_measure(a, b, data_range=1.0).item(),
    }


def unedited_part_metrics(
    source: np.ndarray, edited: np.ndarray, edit_mask: np.ndarray, lpips_network: torch.nn.Module
) -> dict[str, float]:
    """The PIE-Bench background metrics, keyed as the reference's CSV columns (`psnr_unedit_part`, ...)."""
    values = pixel_metrics(source, edited, lpips_network, keep=~edit_mask.astype(bool))
    return {f"{name}_unedit_part": value for name, value in values.items()}
