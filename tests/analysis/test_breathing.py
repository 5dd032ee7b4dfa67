"""Breathing: the correlation between a run's surprise and the density its surgeon set."""

from __future__ import annotations

import math

import pytest

from esper.analysis.breathing import breathing_correlation, breathing_summary


def test_density_that_follows_the_loss_jumps_correlates_positively() -> None:
    # Loss jumps ×2 before surgeries 2 and 5; the surgeon answers at that surgery.
    losses = [1.0, 1.0, 2.0, 1.0, 1.0, 2.0, 1.0, 1.0]
    follows = [0.1, 0.1, 0.2, 0.05, 0.1, 0.2, 0.05]  # density after surgeries 0 … 6
    assert breathing_correlation(losses, follows) > 0.9
    assert breathing_correlation(losses, [0.1] * 7) != breathing_correlation(losses, [0.1] * 7)
    opposite = [0.1, 0.1, 0.05, 0.2, 0.1, 0.05, 0.2]
    assert breathing_correlation(losses, opposite) < -0.9
    with pytest.raises(ValueError, match="need 7 densities"):
        breathing_correlation(losses, follows[:3])


def test_summary_keeps_conditions_that_breathe() -> None:
    rows = [
        {"policy": "emrakul_elastic", "density": 0.1, "breathing": r} for r in (0.2, 0.4, 0.3)
    ] + [{"policy": "rigl", "density": 0.1, "breathing": math.nan}]
    (entry,) = breathing_summary(rows)
    assert entry["policy"] == "emrakul_elastic" and entry["runs"] == 3
    assert entry["mean_r"] == pytest.approx(0.3) and entry["positive_runs"] == 3
