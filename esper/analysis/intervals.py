"""Bootstrap confidence intervals for the comparisons the science rests on.

With 5 seeds per condition a Student-t interval leans on normality that online accuracies do
not promise (they are bounded and often skewed near a ceiling), so comparisons between
surgeons use bootstrap intervals (Efron & Tibshirani 1993), computed by
:func:`scipy.stats.bootstrap` with the bias-corrected and accelerated (BCa) method and a fixed
random stream, so a table is reproducible to the digit. Two surgeons run on the same streams
and seeds are compared by their **paired** differences (same stream, same seed): the interval
of the mean difference, which removes the variance the two share (a hard stream is hard for
both).

This module is torch-free, like the rest of :mod:`esper.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["Interval", "bootstrap_interval", "paired_interval"]

RESAMPLES = 9999
"""Bootstrap resamples (scipy's default)."""


@dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval.

    Attributes:
        mean: Mean of the finite values (NaN without any).
        low: Lower end (NaN with fewer than two values: no spread to resample).
        high: Upper end.
        n: Number of finite values.
        confidence: Coverage of the interval.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval (a difference "detected" at this
        confidence); ``False`` when the interval is undefined."""
        return bool(self.low > value or self.high < value)

    def to_json(self) -> dict[str, object]:
        """``{"mean", "ci": [low, high], "n"}`` (NaN as ``None``)."""
        clean = lambda v: None if math.isnan(v) else v  # noqa: E731
        return {"mean": clean(self.mean), "ci": [clean(self.low), clean(self.high)], "n": self.n}


def bootstrap_interval(
    values: Iterable[float],
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """BCa bootstrap interval of the mean of ``values`` (NaNs dropped).

    Args:
        values: Samples, one per independent unit (seed, stream).
        confidence: Coverage in ``(0, 1)``.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling (the interval is reproducible).

    Raises:
        ValueError: ``confidence`` outside ``(0, 1)`` or ``resamples < 1``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be ≥ 1, got {resamples}")
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    mean = float(arr.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, confidence)
    if np.all(arr == arr[0]):  # no spread: the interval is the point (BCa is undefined)
        return Interval(mean, mean, mean, n, confidence)
    result = stats.bootstrap(
        (arr,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return Interval(mean, float(low), float(high), n, confidence)


def paired_interval(
    a: Iterable[float],
    b: Iterable[float],
    confidence: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of the mean paired difference ``a − b``.

    ``a[i]`` and ``b[i]`` must come from the same unit (same stream, same seed); pairs with a
    non-finite side are dropped.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    left, right = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    if left.shape != right.shape:
        raise ValueError(
            f"paired samples must have equal lengths, got {left.size} and {right.size}"
        )
    return bootstrap_interval(left - right, confidence, resamples, seed)
