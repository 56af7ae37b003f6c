"""Inversion methods, one per file; importing this package imports every module in it, which registers each method
in `INVERSIONS` (a new method needs no entry here)."""

from invbench.registry import import_submodules
from inversions.base import INVERSIONS, Inversion, InversionResult, fixed_point_residual

import_submodules(__name__, __path__)

__all__ = ["INVERSIONS", "Inversion", "InversionResult", "fixed_point_residual"]
