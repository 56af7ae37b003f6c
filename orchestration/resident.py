"""What a process keeps loaded between the jobs it runs.

A local `-m` sweep runs its jobs one after another in one process (Hydra's basic launcher); each job used to build
the model and load the metric backbones again. Here one object per kind (the model, the metric suite) stays
resident, keyed by everything that built it; a job that needs another one replaces it, so memory holds one model at a
time. Reuse is exact because methods leave the model as they found it: attention processors, hooks and gradients are
restored when a method finishes, and every sample is seeded before it runs. tests/test_grid.py proves it: its sweeps
run every pair of a group in one process, and their images equal the committed grid record bit for bit.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from invbench.results import config_hash

log = logging.getLogger(__name__)

T = TypeVar("T")
_held: dict[str, tuple[str, Any]] = {}


def resident(kind: str, defining: Any, build: Callable[[], T]) -> tuple[T, bool]:
    """The `kind` object built from `defining` (a JSON-able description of everything that determines it): the one
    this process holds when it was built from the same description, else `build()`, which then replaces it.
    Returns (object, whether it was reused)."""
    key = config_hash(defining)
    held = _held.get(kind)
    if held is not None and held[0] == key:
        log.info("%s: reusing the one this process loaded for an earlier job", kind)
        return held[1], True
    if held is not None:
        del _held[kind], held
        gc.collect()  # free the replaced one before the new one is built
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    built = build()
    _held[kind] = (key, built)
    return built, False


def release_all() -> None:
    """Forget everything held (tests that need a fresh process's behaviour)."""
    _held.clear()
    gc.collect()
