"""recovery_steps: steps after a drift until the running accuracy is back at its old level."""

from __future__ import annotations

import numpy as np
import pytest

from esper import measures
from esper.measures import recovery_steps


@pytest.mark.parametrize(("value", "window"), [(1.0, 1), (0.5, 4), (0.9, 3), (0.7, 10), (0.95, 7)])
def test_a_task_already_at_the_level_recovers_in_one_window(value: float, window: int) -> None:
    """The running mean of ``window`` equal values equals the level despite rounding."""
    assert recovery_steps([value] * (window + 2), value, window) == window


def test_recovery_counts_the_steps_up_to_the_first_window_at_the_level() -> None:
    assert recovery_steps([0.0, 0.25, 0.5, 1.0, 0.0], 0.5, window=1) == 3
    # running means over 2 steps: 0.125, 0.375, 0.75 (first ≥ 0.625: the window ending at step 4)
    assert recovery_steps(np.array([0.0, 0.25, 0.5, 1.0]), 0.625, window=2) == 4
    # a single step at the level is not enough when the window is longer
    assert recovery_steps([0.0, 1.0, 0.0, 0.75, 0.75], 0.75, window=2) == 5


def test_never_reaching_the_level_is_none() -> None:
    assert recovery_steps([0.5, 0.75, 0.875], 0.9, window=1) is None


@pytest.mark.parametrize(("after", "window"), [([], 1), ([1.0, 1.0], 3)])
def test_fewer_steps_than_the_window_is_none(after: list[float], window: int) -> None:
    assert recovery_steps(after, 0.0, window) is None


@pytest.mark.parametrize("window", [0, -2])
def test_a_window_below_one_is_refused(window: int) -> None:
    with pytest.raises(ValueError, match=rf"window={window} must be ≥ 1"):
        recovery_steps([1.0, 1.0], 0.5, window)


# --- mask churn: three measures, one definition each -----------------------------------------

_HISTORY = np.array(
    [  # weights: 0 flip-flops, 1 moves on, 2 stays, 3 regrown late, 4 reverses at the end
        [1, 1, 1, 0, 1],
        [0, 1, 1, 0, 0],
        [1, 0, 1, 0, 0],
        [0, 0, 1, 1, 1],
    ],
    dtype=bool,
)


def test_flip_counts_and_rate_count_every_change() -> None:
    assert measures.flip_counts(_HISTORY).tolist() == [3, 1, 0, 1, 2]
    assert measures.flip_rate(_HISTORY) == pytest.approx(7 / (5 * 3))
    assert measures.flip_rate(_HISTORY[:1]) == 0.0


def test_reversal_rate_counts_latest_changes_that_undo_an_earlier_one() -> None:
    # changed at the last update: 0 (changed before), 3 (first change), 4 (changed before)
    assert measures.reversal_rate(_HISTORY) == pytest.approx(2 / 5)
    assert measures.reversal_rate(_HISTORY[:2]) == 0.0


def test_regrow_repruned_needs_inactive_active_inactive() -> None:
    assert measures.regrow_repruned(_HISTORY).tolist() == [True, False, False, False, False]
    assert not measures.regrow_repruned(_HISTORY[:1]).any()


def _pattern_by_search(states: np.ndarray) -> bool:
    """The definition read literally: some ``i < j < k`` with inactive, active, inactive."""
    n = len(states)
    return any(
        not states[i] and states[j] and not states[k]
        for i in range(n)
        for j in range(i + 1, n)
        for k in range(j + 1, n)
    )


@pytest.mark.parametrize("updates", [1, 2, 3, 4, 6])
def test_regrow_repruned_is_the_pattern_searched_weight_by_weight(updates: int) -> None:
    rng = np.random.default_rng(updates)
    history = rng.random((updates, 400)) < 0.5
    expected = [_pattern_by_search(history[:, w]) for w in range(history.shape[1])]
    assert measures.regrow_repruned(history).tolist() == expected


def test_a_history_must_be_a_bool_matrix() -> None:
    with pytest.raises(ValueError, match="bool"):
        measures.flip_rate(_HISTORY.astype(int))
