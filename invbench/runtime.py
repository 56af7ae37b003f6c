"""Process-level setup of a job: device, CPU threads, seeding, and the environment record of a run."""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from invbench.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return device


def configure_threads(requested: int | None, launcher_cpus: int | None) -> int:
    """Cap torch's CPU threads. Parallel local jobs (submitit_local starts every job of a sweep at once and does not
    pin CPUs) would otherwise each take all cores and oversubscribe the machine."""
    if requested:
        threads = requested
    elif launcher_cpus:
        threads = launcher_cpus
    elif os.environ.get("SUBMITIT_EXECUTOR") == "local":
        threads = 1
    else:
        threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    return threads


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_libc: ctypes.CDLL | None = None  # set once glibc keeps freed memory


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of returning it to the system at once; True where it now does.

    torch's CPU allocator does not cache, and glibc maps every block above its mmap threshold (adaptive, at most
    32 MB) fresh and unmaps it when freed: each 64 MB attention map of a 512² image was page-faulted in (zero-filled
    by the kernel) again at every layer and step. With allocations from the heap and no trimming, the same bytes are
    reused once the heap has settled (a few steps). The arithmetic is unchanged (outputs bit for bit the same); on 2
    CPU cores with the tiny model at 512², P2P's edit took 13.6-18.2 s per sample instead of 29.1 s. The cost:
    torch's aligned blocks fragment the heap, so a sample's peak RSS read 18-21 % higher in that run. The memory is
    given back before each sample (`release_freed_memory`, from the cost meter), so that a row's peak is its own
    sample's. Set once per process; a no-op off glibc."""
    global _libc
    if _libc is None and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL("libc.so.6")
        except OSError:
            return False
        if libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1:
            _libc = libc
            log.info("memory: freed CPU memory is kept for reuse (glibc mallopt: no mmap, no trim)")
    return _libc is not None


def release_freed_memory() -> None:
    """Give the free memory `keep_freed_memory` kept back to the system (glibc's malloc_trim), so that a peak resident
    set measured from here on counts what comes next, not an earlier sample's high-water mark. The next few steps
    fault their pages in again, once."""
    if _libc is not None:
        _libc.malloc_trim(0)


def seed_everything(seed: int) -> None:
    """Seed every generator a method may draw from; called before each sample (as the reference does)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def environment_info(device: torch.device) -> dict[str, Any]:
    from invbench.provenance import code_version, library_versions

    info = {
        **code_version(),
        "python": platform.python_version(),
        **library_versions(),
        "host": platform.node(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "keeps_freed_memory": _libc is not None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def random_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
