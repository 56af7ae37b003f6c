"""Process-level setup of a job: device, CPU threads, seeding, and the environment record of a run."""

from __future__ import annotations

import logging
import os
import platform
import random
import subprocess
from pathlib import Path
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


def seed_everything(seed: int) -> None:
    """Seed every generator a method may draw from; called before each sample (as the reference does)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def environment_info(device: torch.device) -> dict[str, Any]:
    import diffusers
    import transformers

    import invbench

    info = {
        "invbench": invbench.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "host": platform.node(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _git_commit() -> str | None:
    """The commit of the invbench checkout, with '-dirty' when it has uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty.strip() else "")
