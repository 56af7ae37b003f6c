"""Editors, one per file; importing this package imports every module in it, which registers each editor in
`EDITORS` (a new editor needs no entry here)."""

from editors.base import EDITORS, Editor, EditResult, denoise_branches
from invbench.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["EDITORS", "EditResult", "Editor", "denoise_branches"]
