"""Measures shared by the demo, the organism and the analysis, each defined once.

Online performance (:func:`recovery_steps`) and the three measures of a mask's churn over a
window of its history, which are easily confused under the one word "flip-flop":

* :func:`flip_rate`: state changes per weight per mask update (all turnover);
* :func:`reversal_rate`: the share of weights whose change at the latest update undid a change
  made earlier in the window (turnover that comes back; the reward's oscillation term);
* :func:`regrow_repruned`: the weights pruned, regrown and pruned again within the window (the
  flip-flop detector counts the same pattern in an event log).

Torch-free (NumPy only), so that :mod:`esper.analysis` computes exactly what the workloads
report. The per-batch accuracy itself is defined once in
:func:`esper.workloads.prequential.online_accuracy`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "flip_counts",
    "flip_rate",
    "recovery_steps",
    "regrow_repruned",
    "reversal_rate",
]


def recovery_steps(
    after: Sequence[float] | np.ndarray, level: float, window: int = 1
) -> int | None:
    """Steps after a drift until online accuracy is back to its pre-drift ``level``.

    The recovery is the number of steps of the new task consumed until the running mean of
    accuracy over ``window`` consecutive steps first reaches ``level`` (so a task whose first
    ``window`` steps already average ``level`` recovers in ``window`` steps). The same rule
    serves SGD steps (the demo, ``window`` = the experiment's recovery window) and surgeries
    (:func:`esper.analysis.compare.recovery_steps`, ``window`` = 1).

    Args:
        after: Accuracy of each step of the new task, in order.
        level: The pre-drift accuracy to reach.
        window: Steps averaged (``≥ 1``).

    Returns:
        The step count, or ``None`` if the level is never reached (or fewer than ``window``
        steps are given).
    """
    if window < 1:
        raise ValueError(f"window={window} must be ≥ 1")
    acc = np.asarray(after, dtype=float)
    if acc.size < window:
        return None
    running = np.convolve(acc, np.ones(window) / window, mode="valid")
    hits = np.flatnonzero((running >= level) | np.isclose(running, level, rtol=1e-9, atol=0.0))
    return int(hits[0]) + window if hits.size else None


def _history(history: np.ndarray) -> np.ndarray:
    h = np.asarray(history)
    if h.dtype != np.bool_ or h.ndim != 2:
        raise ValueError(
            f"a mask history is a bool [updates, weights] array, got {h.dtype} {h.shape}"
        )
    return h


def flip_counts(history: np.ndarray) -> np.ndarray:
    """Per weight, the state changes between consecutive masks of ``history``.

    Args:
        history: ``[updates, weights]`` bool, oldest mask first (True = active).
    """
    h = _history(history)
    return (h[1:] != h[:-1]).sum(axis=0)


def flip_rate(history: np.ndarray) -> float:
    """State changes per weight per mask update over ``history``, in ``[0, 1]``; 0 with fewer
    than two masks. Mask "flips" as measured by Liu et al. 2021 (ITOP, ICML, arXiv 2102.02887)."""
    h = _history(history)
    updates, weights = h.shape
    return float(flip_counts(h).sum()) / (weights * (updates - 1)) if updates > 1 else 0.0


def reversal_rate(history: np.ndarray) -> float:
    """The share of weights whose state changed at the latest update and had changed earlier in
    the window: the latest change undid one made before (a weight dropped and regrown, or
    regrown and dropped), not turnover moving on to new weights. 0 with fewer than three masks.
    """
    h = _history(history)
    updates, weights = h.shape
    if updates < 3:
        return 0.0
    now = h[-1] != h[-2]
    return float((now & (flip_counts(h[:-1]) > 0)).sum()) / weights


def regrow_repruned(history: np.ndarray) -> np.ndarray:
    """Per weight (bool), whether its states within ``history`` contain inactive → active →
    inactive: pruned, regrown and pruned again (the mask-update oscillation that Evci et al.
    2020, RigL, ICML, arXiv 1911.11134, guard against by decaying the update fraction).

    One scan over the window's masks, carrying per weight whether it has been inactive and
    whether it has since been regrown: a few boolean operations per mask, where cumulative
    sums over the window's integers cost about 75 times as much on a 16k-weight layer.
    """
    h = _history(history)
    seen_inactive = ~h[0]
    regrown = np.zeros(h.shape[1], dtype=bool)
    out = np.zeros(h.shape[1], dtype=bool)
    for mask in h[1:]:
        out |= regrown & ~mask
        regrown |= mask & seen_inactive
        seen_inactive |= ~mask
    return out
