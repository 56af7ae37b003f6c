"""Uncertainty of the table means: paired bootstrap confidence intervals and paired comparisons of two methods.

PIE-Bench papers publish single means over 700 images; differences of a few tenths are common and often smaller
than the sampling noise. The bootstrap here resamples *images*: one set of resampled image ids is drawn per table
and used for every method in it (paired), so that the intervals of two methods on the same images are comparable and
their difference can be bootstrapped from the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Bootstrap:
    """Resampling plan over a fixed, ordered set of sample ids: `draws[b]` are the positions drawn in resample b."""

    sample_ids: tuple[str, ...]
    draws: np.ndarray  # (resamples, len(sample_ids)) int
    confidence: float

    @classmethod
    def plan(
        cls,
        sample_ids,
        resamples: int = DEFAULT_RESAMPLES,
        confidence: float = DEFAULT_CONFIDENCE,
        seed: int = DEFAULT_SEED,
    ) -> Bootstrap:
        ids = tuple(sorted(set(sample_ids)))
        draws = np.random.default_rng(seed).integers(0, len(ids), size=(resamples, len(ids)))
        return cls(ids, draws, confidence)

    def align(self, values: pd.Series) -> np.ndarray:
        """A method's values (indexed by sample id) laid out on the plan's ids, NaN where it has none."""
        return values.reindex(list(self.sample_ids)).to_numpy(dtype=float)

    def means(self, aligned: np.ndarray) -> np.ndarray:
        """The mean of each resample, over the drawn samples that have a value (NaN values are left out, as in the
        table's own mean)."""
        drawn = aligned[self.draws]
        counts = np.sum(~np.isnan(drawn), axis=1)
        sums = np.nansum(drawn, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def interval(self, aligned: np.ndarray) -> tuple[float, float]:
        """Percentile interval of the resampled means; (nan, nan) when the method has no values."""
        means = self.means(aligned)
        means = means[~np.isnan(means)]
        if means.size == 0:
            return float("nan"), float("nan")
        tail = (1 - self.confidence) / 2 * 100
        low, high = np.percentile(means, [tail, 100 - tail])
        return float(low), float(high)


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    samples: int  # samples where both methods have a value
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b over those samples
    low: float
    high: float
    a_higher: float  # fraction of those samples where a's value is higher

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def paired_difference(
    a: pd.Series,
    b: pd.Series,
    metric: str,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
) -> PairedDifference:
    """Compare two methods on the samples both have a value for (`a`, `b` indexed by sample id): the mean paired
    difference with its bootstrap interval, and how often a is higher."""
    both = pd.concat({"a": a, "b": b}, axis=1).dropna()
    if both.empty:
        nan = float("nan")
        return PairedDifference(metric, 0, nan, nan, nan, nan, nan, nan)
    plan = Bootstrap.plan(both.index, resamples, confidence, seed)
    differences = plan.align(both["a"] - both["b"])
    low, high = plan.interval(differences)
    return PairedDifference(
        metric=metric,
        samples=len(both),
        mean_a=float(both["a"].mean()),
        mean_b=float(both["b"].mean()),
        difference=float(np.mean(differences)),
        low=low,
        high=high,
        a_higher=float((both["a"] > both["b"]).mean()),
    )
