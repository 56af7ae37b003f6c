"""The metrics axis: a suite scores one sample's edited image (and reconstruction) into row columns.

Suites are dataclasses whose fields are set from `conf/metrics/<name>.yaml` and are registered in `METRICS`.
`load(device)` reads their backbones once per job; `score` is then called per sample.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from invbench.registry import Registry
from pie_bench import Sample


class MetricSuite(ABC):
    name: ClassVar[str]

    @abstractmethod
    def load(self, device: torch.device) -> None:
        """Load the backbones (from local caches or as tiny stand-ins) onto `device`."""

    @property
    @abstractmethod
    def setup(self) -> str:
        """Which protocol and backbones produced the values; recorded in every row so that tables never average
        values of different setups into one number."""

    @property
    def image_quantisation(self) -> str:
        """How decoded images become uint8 before they are written and scored: "round", or "truncate" where the
        suite reproduces the reference's pipeline."""
        return "round"

    @abstractmethod
    def score(
        self, sample: Sample, edited: np.ndarray, reconstruction: np.ndarray | None, lossless: bool
    ) -> dict[str, Any]:
        """Metric columns for one sample. `edited` / `reconstruction` are uint8 H×W×3; `lossless` says whether they
        come straight from the model (True) or were read back from a lossy file such as a published JPEG."""


METRICS: Registry[MetricSuite] = Registry("metrics")


@METRICS.register("none")
@dataclass
class NoMetrics(MetricSuite):
    """No image-quality metrics; rows still carry seconds, UNet evaluations and peak memory."""

    def load(self, device: torch.device) -> None:
        pass

    @property
    def setup(self) -> str:
        return "none"

    def score(
        self, sample: Sample, edited: np.ndarray, reconstruction: np.ndarray | None, lossless: bool
    ) -> dict[str, Any]:
        return {}
