"""Editors, one per file; importing this package registers them all in `EDITORS`."""

from editors import direct, masactrl, p2p, p2p_edict, p2plus, pix2pix_zero, pnp  # noqa: F401  (registers)
from editors.base import EDITORS, Editor, EditResult, denoise_branches

__all__ = ["EDITORS", "EditResult", "Editor", "denoise_branches"]
