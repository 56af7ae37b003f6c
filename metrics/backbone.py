"""Metric backbones: the real networks from local caches, or embedded tiny stand-ins built from their config.

Nothing is downloaded. `metrics.backbones` decides what happens when a real backbone is not on the machine:
`auto` uses the tiny stand-in and says so (log line and the `metrics_setup` of every row), `real` stops with a
message saying how to provide the weights, `tiny` never looks for the real ones (tests, demos).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from invbench.errors import ConfigError, ModelNotAvailableError

log = logging.getLogger(__name__)

BACKBONE_MODES = ("auto", "real", "tiny")
# Set in the config of a real architecture saved with random weights (benchmarks/metric_backbones.py: a rehearsal
# of the real loading code and metric paths); the description then says so in every row's metrics_setup
RANDOM_WEIGHTS_MARK = "invbench_random_weights"


def described(source: str, random_weights: bool) -> str:
    """A backbone's source as rows record it, marked when its weights are random."""
    return f"{source} (RANDOM weights: its values mean nothing)" if random_weights else source


T = TypeVar("T")


@dataclass
class Backbone(Generic[T]):
    network: T
    description: str  # recorded in every row, e.g. "facebook/dino-vitb8" or "tiny random ViT (seed 0)"
    real: bool


def resolve_backbone(
    mode: str,
    metric: str,
    load_real: Callable[[], tuple[T, str]],
    build_tiny: Callable[[], tuple[T, str]],
    how_to_provide: str,
) -> Backbone[T]:
    """The real backbone if `mode` allows and it is cached, else the tiny stand-in (or an error in mode `real`)."""
    if mode not in BACKBONE_MODES:
        raise ConfigError(f"metrics.backbones='{mode}' is not one of {', '.join(BACKBONE_MODES)}")
    if mode != "tiny":
        try:
            network, description = load_real()
            return Backbone(network, description, real=True)
        except OSError as error:  # transformers/hub raise OSError (or subclasses) for missing local files
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            if mode == "real":
                raise ModelNotAvailableError(
                    f"the {metric} backbone is not available on this machine: {reason}\n"
                    f"invbench never downloads weights during a run. {how_to_provide}\n"
                    "Or score with the embedded tiny stand-in (numbers not comparable with papers): "
                    "metrics.backbones=auto or metrics.backbones=tiny."
                ) from None
            log.warning(
                "METRICS: the real %s backbone is not on this machine (%s); using an embedded tiny stand-in with "
                "random weights. Its values check the pipeline only and are NOT comparable with published numbers. "
                "%s",
                metric,
                reason,
                how_to_provide,
            )
    network, description = build_tiny()
    return Backbone(network, description, real=False)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build random weights from `seed` without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
