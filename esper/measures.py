"""Measures of online performance shared by the demo, the organism and the analysis.

Torch-free (NumPy only), so that :mod:`esper.analysis` computes exactly what the workloads
report. The per-batch accuracy itself is defined once in
:func:`esper.workloads.prequential.online_accuracy`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["recovery_steps"]


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
