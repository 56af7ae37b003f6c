"""Inversion methods, one per file; importing this package registers them all in `INVERSIONS`."""

from inversions import ddim, none, null_text, prompt_tuning, spdinv, stylediffusion, todinv  # noqa: F401  (registers)
from inversions.base import INVERSIONS, Inversion, InversionResult, fixed_point_residual

__all__ = ["INVERSIONS", "Inversion", "InversionResult", "fixed_point_residual"]
