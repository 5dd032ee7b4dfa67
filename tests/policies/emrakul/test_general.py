"""The Surgeon General's allocation meets the global budget exactly, whatever its logits."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from esper.policies.emrakul.general import SurgeonGeneral, allocate_counts


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(1, 5000), st.floats(-20.0, 20.0)), min_size=1, max_size=12),
    density=st.floats(0.0, 1.0),
    min_density=st.floats(0.0, 0.2),
)
def test_budget_is_exact_and_clipped(
    data: list[tuple[int, float]], density: float, min_density: float
) -> None:
    sizes = [n for n, _ in data]
    logits = [z for _, z in data]
    total = sum(sizes)
    # Feasible: the rounded budget leaves room for every layer's rounded-up floor.
    assume(round(density * total) >= sum(math.ceil(min_density * n) for n in sizes))
    assume(density >= min_density)
    counts = allocate_counts(logits, sizes, density, min_density)
    assert sum(counts) == round(density * total)
    for c, n in zip(counts, sizes, strict=True):
        assert math.ceil(min_density * n - 1e-9) <= c <= n


def test_zero_logits_give_uniform_density_and_logits_move_weight() -> None:
    sizes = [1000, 400, 100]
    assert allocate_counts([0.0, 0.0, 0.0], sizes, 0.1) == [100, 40, 10]
    counts = allocate_counts([3.0, 0.0, 0.0], sizes, 0.1)
    assert counts[0] > 100 and sum(counts) == 150


def test_overflow_is_redistributed_as_amc_clips() -> None:
    counts = allocate_counts([0.0, 10.0], [1000, 10], 0.5)
    assert counts == [495, 10]  # the small layer saturates at dense, the rest goes to layer 0


def test_invalid_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="min_density"):
        allocate_counts([0.0], [10], 0.05, min_density=0.1)
    with pytest.raises(ValueError, match="logits"):
        allocate_counts([0.0, 1.0], [10], 0.5)


def test_general_distribution_shapes() -> None:
    general = SurgeonGeneral(state_dim=7, max_layers=4)
    dist = general.distribution(torch.randn(2, 7))
    action = dist.sample(torch.Generator().manual_seed(0))
    assert action.shape == (2, 5) and dist.log_prob(action).shape == (2,)
    assert 0.0 <= general.amplitude_gain(action[0]) <= 2.0
