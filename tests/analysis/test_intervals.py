"""Bootstrap intervals: a known paired difference is detected, an absent one is not (at
about the nominal rate), and the intervals are reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esper.analysis.intervals import bootstrap_interval, paired_interval

_RESAMPLES = 2000


def _seeds(rng: np.random.Generator, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed accuracies of two surgeons on shared streams: stream difficulty is shared."""
    stream = rng.normal(0.8, 0.05, n)
    return stream + rng.normal(0, 0.005, n), stream + rng.normal(0, 0.005, n)


def test_a_known_paired_difference_is_detected() -> None:
    rng = np.random.default_rng(0)
    a, b = _seeds(rng)
    better = a + 0.02  # two points better on every seed
    interval = paired_interval(better, b, resamples=_RESAMPLES)
    assert interval.excludes(0.0) and interval.low > 0
    assert abs(interval.mean - 0.02) < 0.01  # near the true difference
    # unpaired, the shared stream variance (0.05) hides the same difference
    unpaired = bootstrap_interval(better, resamples=_RESAMPLES)
    assert unpaired.high - unpaired.low > 2 * (interval.high - interval.low)


def test_an_absent_difference_is_rarely_declared() -> None:
    rng = np.random.default_rng(1)
    declared = 0
    trials = 100
    for i in range(trials):
        a, b = _seeds(rng, n=10)
        declared += paired_interval(a, b, resamples=_RESAMPLES, seed=i).excludes(0.0)
    assert declared <= 15  # nominal 5%; BCa on 10 samples runs a little liberal


def test_reproducible_and_edge_cases() -> None:
    values = [0.7, 0.75, 0.8, 0.72, 0.9]
    first = bootstrap_interval(values, resamples=_RESAMPLES, seed=3)
    assert first == bootstrap_interval(values, resamples=_RESAMPLES, seed=3)
    assert first.low < first.mean < first.high and first.n == 5
    single = bootstrap_interval([0.5, math.nan])
    assert (single.mean, single.n) == (0.5, 1) and math.isnan(single.low)
    assert not single.excludes(0.0)
    assert bootstrap_interval([0.3, 0.3, 0.3]).to_json() == {"mean": 0.3, "ci": [0.3, 0.3], "n": 3}
    assert bootstrap_interval([]).to_json()["mean"] is None
    with pytest.raises(ValueError, match="equal lengths"):
        paired_interval([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(values, confidence=1.5)
