"""Inversion methods, one per file; importing this package registers them all in `INVERSIONS`."""

from inversions import ddim, none, null_text, prompt_tuning, todinv  # noqa: F401  (registers)
from inversions.base import INVERSIONS, Inversion, InversionResult

__all__ = ["INVERSIONS", "Inversion", "InversionResult"]
