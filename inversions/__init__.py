"""Inversion methods, one per file; importing this package registers them all in `INVERSIONS`."""

from inversions import (  # noqa: F401  (registers)
    ddim,
    direct_inversion,
    edict,
    edit_friendly,
    fixed_point,
    negative_prompt,
    none,
    null_text,
    pix2pix_zero,
    prompt_tuning,
    proxedit,
    renoise,
    spdinv,
    stylediffusion,
    todinv,
)
from inversions.base import INVERSIONS, Inversion, InversionResult, fixed_point_residual

__all__ = ["INVERSIONS", "Inversion", "InversionResult", "fixed_point_residual"]
