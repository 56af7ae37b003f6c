"""Measurements of a run: cost per sample (seconds, UNet evaluations, peak memory) and, per the PIE-Bench protocol,
image-quality metrics."""

from metrics.cost import CostMeter

__all__ = ["CostMeter"]
