"""Measurements of a run: cost per sample (seconds, UNet evaluations, peak memory) and image-quality metric suites
(the PIE-Bench protocol); importing this package registers the suites in `METRICS`."""

from metrics import pie_bench  # noqa: F401  (registers)
from metrics.cost import CostMeter
from metrics.suite import METRICS, MetricSuite

__all__ = ["METRICS", "CostMeter", "MetricSuite"]
