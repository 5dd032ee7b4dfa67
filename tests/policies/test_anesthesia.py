"""Harmonic annealing of the density target and sedation helpers."""

from __future__ import annotations

import pytest

from esper.policies.anesthesia import HarmonicAnnealing, sedate
from esper.workloads.actions import LayerAction


def test_harmonic_target_oscillates_around_budget() -> None:
    schedule = HarmonicAnnealing(budget=0.2, amplitude=0.05, period=8)
    targets = [schedule.target(t) for t in range(8)]
    assert targets[0] == pytest.approx(0.2)
    assert targets[2] == pytest.approx(0.25) and targets[6] == pytest.approx(0.15)
    assert sum(targets) / 8 == pytest.approx(0.2)
    assert schedule.target(2, gain=0.0) == pytest.approx(0.2)
    assert schedule.target(2, gain=2.0) == pytest.approx(0.3)


def test_harmonic_target_is_clipped_and_checkpointed() -> None:
    schedule = HarmonicAnnealing(budget=0.1, amplitude=0.5, period=4, floor=0.05)
    assert schedule.target(3) == 0.05 and schedule.target(1) == 0.6
    other = HarmonicAnnealing(budget=0.5)
    other.load_state_dict(schedule.state_dict())
    assert other == schedule
    with pytest.raises(ValueError, match="period"):
        HarmonicAnnealing(budget=0.1, period=0)
    with pytest.raises(ValueError, match="gain"):
        schedule.target(0, gain=-1.0)


def test_sedate() -> None:
    action = sedate(LayerAction(), 0.3, 5)
    assert (action.sedation, action.sedation_steps) == (0.3, 5)
    assert sedate(LayerAction(), 1.0, 5).sedation_steps == 0
    action = LayerAction(sedation=0.5, sedation_steps=2)
    with pytest.raises(ValueError, match=r"sedation=1\.5 must lie in \(0, 1\]"):
        sedate(action, 1.5, 5)
    assert (action.sedation, action.sedation_steps) == (0.5, 2)  # unchanged
