"""Does a strategy help? Online accuracy after its episodes against matched quiet windows.

A detector (:mod:`esper.analysis.detectors`) says *that* a surgeon did something; whether it
paid is a separate question. For a detector whose episodes have a start (Lazarus: the burst,
ghost circuits: the return), :func:`episode_effects` compares the mean online accuracy over the
``k`` surgeries after each episode's start with the same quantity in **matched windows** of the
same run: windows starting at the same phase of their task (surgeries since the task began, so
an episode right after a drift is compared with other windows right after a drift) with no
episode starting within ``k`` surgeries of them. Each episode gives one difference; the
differences' mean has a BCa interval (:func:`esper.analysis.intervals.bootstrap_interval`).
An episode without a matched window in its run is left out (and counted).

This is observational: a surgeon may start episodes where accuracy would have moved anyway.
The matching removes the stream's phase, not every confound. Torch-free, like the rest of
:mod:`esper.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from esper.analysis.intervals import bootstrap_interval

__all__ = ["EPISODE_START", "episode_effects", "task_phase"]

EPISODE_START = {"lazarus": "burst_step", "ghost": "return_step", "heat_burst": "burst_step"}
"""The column dating each detector's episodes (detectors without one summarise a whole run);
``heat_burst`` dates every heat burst, a Lazarus episode or not
(:func:`esper.analysis.detectors.lazarus.heat_bursts`)."""


def task_phase(metrics: pd.DataFrame) -> pd.Series:
    """Surgeries since the current task began, by ``surgery_step`` (a task begins where
    ``task_index`` changes)."""
    rows = metrics.groupby("surgery_step")["task_index"].first().sort_index()
    starts = rows.ne(rows.shift()).cumsum()
    return rows.groupby(starts).cumcount()


def _after(acc: pd.Series, start: int, k: int) -> float:
    window = acc[(acc.index > start) & (acc.index <= start + k)]
    return float(window.mean()) if len(window) else math.nan


def episode_effects(
    runs: Sequence[tuple[pd.DataFrame, Sequence[int]]], k: int = 5
) -> dict[str, Any]:
    """Accuracy after episodes minus matched quiet windows, over ``runs``.

    Args:
        runs: Per run, its ``metrics`` table (``surgery_step``, ``task_index``,
            ``online_accuracy``) and the surgery steps its episodes start at.
        k: Surgeries after a start that are averaged.

    Returns:
        ``episodes`` (with a matched window), ``unmatched``, ``mean_diff`` and ``ci`` (BCa,
        ``None`` ends without two differences), and ``after`` / ``matched`` (the means).
    """
    if k < 1:
        raise ValueError(f"k={k} must be ≥ 1 surgery")
    diffs: list[float] = []
    after_values: list[float] = []
    matched_values: list[float] = []
    unmatched = 0
    for metrics, starts in runs:
        if not len(starts) or metrics.empty:
            continue
        acc = metrics.groupby("surgery_step")["online_accuracy"].mean().sort_index()
        phase = task_phase(metrics)
        begun = np.asarray(sorted(set(int(s) for s in starts)))
        last = int(acc.index.max()) - k
        quiet = [int(s) for s in phase.index if int(s) <= last
                 and not np.any(np.abs(begun - int(s)) <= k)]  # fmt: skip
        for start in begun:
            after = _after(acc, int(start), k)
            same = [s for s in quiet if phase.get(s) == phase.get(int(start))]
            controls = [v for s in same if math.isfinite(v := _after(acc, s, k))]
            if not controls or not math.isfinite(after):
                unmatched += 1
                continue
            matched = float(np.mean(controls))
            diffs.append(after - matched)
            after_values.append(after)
            matched_values.append(matched)
    interval = bootstrap_interval(diffs)

    def finite(v: float) -> float | None:
        return v if math.isfinite(v) else None

    return {
        "k": k,
        "episodes": len(diffs),
        "unmatched": unmatched,
        "mean_diff": finite(interval.mean),
        "ci": [finite(interval.low), finite(interval.high)],
        "after": finite(float(np.mean(after_values))) if after_values else None,
        "matched": finite(float(np.mean(matched_values))) if matched_values else None,
    }
