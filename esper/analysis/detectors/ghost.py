"""Ghost-circuit reactivation: when a distribution returns, the old circuit is regrown.

The seed's anti-fragility argument: instead of discarding a pathway for good, Emrakul keeps it
as a dormant "ghost circuit" and switches it back on when the data distribution it served
comes back. In the log this reads as regrowth, on a recurring distribution's return, of the
very weights that were active the last time that distribution was seen.

Criterion, per replica and layer:

* **Distribution** of a surgery step: the ``distribution`` column when present; else
  ``mapping[task_index]`` when a mapping is given; else ``task_index % period`` when a period
  is given; else ``task_index`` itself (schedules that revisit reuse the task index).
* **Visits**: maximal runs of consecutive surgery steps (metrics and events together) with the
  same distribution. A *return* is a visit to a distribution seen in an earlier visit.
* **Active when last seen** (set ``A``): weights whose latest prune/regrow event up to the end
  of the previous visit was a regrow, plus weights whose first event after that visit (before
  the return) was a prune (only active weights can be pruned). Weights never touched by an
  event are unknown and left out, which makes the test conservative.
* **Reactivation**: the regrown indices ``R`` in the first ``return_window`` surgery steps of
  the return. ``overlap_fraction = |R ∩ A| / |R|`` is compared with ``chance``, the larger of

  - the *uniform* chance that a random regrowth from the inactive weights lands in ``A``:
    ``|A ∩ inactive| / n_inactive``, where ``n_inactive`` is estimated from the first regrow
    row's ``density_before`` and the layer's size (``layer_sizes``, else the net count change ÷
    density change of a surgery that resized the layer, else its largest touched index + 1,
    which underestimates the size and so overestimates the chance), and
  - the surgeon's *habit*: the share of the layer's regrowth between the two visits (while
    other distributions were shown) that landed in the same ``A``.

  ``lift = overlap_fraction ÷ chance``. ``p_value`` is the larger of a one-sided binomial test
  against the uniform chance and a one-sided Fisher exact test of the return's regrowth
  against the habit's. Episodes with ``lift >= min_lift``, ``overlap_fraction >=
  min_fraction``, ``p_value < alpha`` and at least ``min_overlap`` reactivated weights are
  reported.

Validated on real runs (``tests/analysis/test_detectors_real.py``): a scripted surgeon that
puts a circuit to sleep when its distribution leaves and wakes it on the return is found at
every return; RigL on the same recurring permuted stream fired in 11 of 12 (layer, return)
windows under the former criterion, for three reasons, each fixed here:

* the layer-size fallback took the largest index over *all* layers, so a small layer's chance
  was underestimated up to 13× (lift 10–13 on the 160-weight output layer);
* against the uniform chance alone any non-uniform surgeon "reactivates ghosts": RigL regrows
  the inactive weights of largest gradient, largely those it pruned a few surgeries ago (a
  weight regrown at zero is the first dropped), at any time; the habit is that baseline;
* RigL's gradient regrowth does restore part of the input layer's old circuit when a
  permutation returns (up to 3.7× its habit in 9 of 24 input-layer windows over 6 seeds), but
  mixed into its turnover: at most 34% of what the layer regrows in the window (48% in the
  output layer, where that is no more than chance). A surgeon that keeps
  circuits restores them as a block; ``min_fraction`` asks that the old circuit be at least
  half of the return's regrowth. Its price: a ghost wake followed by heavy turnover within the
  window is diluted below half (a waking surgeon doing RigL swaps in between: 31–38% over five
  surgeries); ``return_window=1`` examines the first surgery of a return alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from esper.analysis.detectors._common import (
    _check,
    _empty,
    _groups,
    _long_indices,
    _replica_keys,
    _require,
    _sizes,
)

__all__ = ["ghost"]

_COLUMNS = [
    "layer",
    "distribution",
    "last_seen_step",
    "return_step",
    "regrown",
    "reactivated",
    "overlap_fraction",
    "active_last_seen",
    "n_inactive",
    "uniform_chance",
    "habit",
    "chance",
    "lift",
    "p_value",
    "detected",
]


def _distribution(
    frame: pd.DataFrame, period: int | None, mapping: Mapping[int, object] | None
) -> pd.Series:
    if "distribution" in frame.columns:
        return frame["distribution"].astype(str)
    task = frame["task_index"].astype(np.int64)
    if mapping is not None:
        missing = sorted(set(task.unique()) - set(mapping))
        if missing:
            raise ValueError(f"ghost: mapping has no entry for task_index {missing[0]}")
        return task.map(mapping).astype(str)
    if period is not None:
        return (task % period).astype(str)
    return task.astype(str)


def _visits(
    ev: pd.DataFrame,
    mt: pd.DataFrame | None,
    period: int | None,
    mapping: Mapping[int, object] | None,
) -> pd.DataFrame:
    """Visit table: ``visit``, ``distribution``, ``start``, ``end`` (surgery steps)."""
    parts = [pd.DataFrame({"step": ev["surgery_step"], "dist": _distribution(ev, period, mapping)})]
    if mt is not None and not mt.empty:
        parts.append(
            pd.DataFrame({"step": mt["surgery_step"], "dist": _distribution(mt, period, mapping)})
        )
    line = pd.concat(parts).drop_duplicates("step").sort_values("step", kind="stable")
    line["visit"] = (line["dist"] != line["dist"].shift()).cumsum()
    return (
        line.groupby("visit")
        .agg(distribution=("dist", "first"), start=("step", "min"), end=("step", "max"))
        .reset_index()
    )


def _active_at(weights: pd.DataFrame, end: int, until: int) -> np.ndarray:
    """Weights known active at step ``end`` (see the module criterion)."""
    upto = weights[weights["surgery_step"] <= end].groupby("index")["action"].last()
    active = set(upto.index[upto == "regrow"])
    after = weights[(weights["surgery_step"] > end) & (weights["surgery_step"] < until)]
    first_after = after.groupby("index")["action"].first()
    active |= set(
        first_after.index[first_after == "prune"].difference(upto.index[upto == "regrow"])
    )
    return np.fromiter(active, dtype=np.int64, count=len(active))


def _inactive_before(weights: pd.DataFrame, step: int) -> np.ndarray:
    last = weights[weights["surgery_step"] < step].groupby("index")["action"].last()
    return last.index[last == "prune"].to_numpy(dtype=np.int64)


def _habit(weights: pd.DataFrame, active: np.ndarray, last_end: int, start: int) -> tuple[int, int]:
    """The layer's regrowth between the two visits (unique weights) and how much of it landed
    in ``active``."""
    between = weights[
        (weights["action"] == "regrow") & weights["surgery_step"].between(last_end + 1, start - 1)
    ]["index"].unique()
    return len(between), int(np.isin(between, active).sum())


def _episode(
    ev: pd.DataFrame,
    weights: pd.DataFrame,
    layer: str,
    last_end: int,
    start: int,
    stop: int,
    sizes: Mapping[str, int],
) -> dict[str, Any] | None:
    """The evidence of one (layer, return) window; ``None`` when nothing can be examined."""
    grown = weights[(weights["action"] == "regrow") & weights["surgery_step"].between(start, stop)]
    if grown.empty:
        return None
    regrown = grown["index"].unique()
    active = _active_at(weights, last_end, start)
    if len(active) == 0:
        return None
    reactivated = int(np.isin(regrown, active).sum())
    known_inactive = np.union1d(_inactive_before(weights, start), regrown)
    size = sizes.get(layer, int(weights["index"].max()) + 1)  # a lower bound: conservative
    rows = ev[
        (ev["layer"] == layer)
        & (ev["action"] == "regrow")
        & ev["surgery_step"].between(start, stop)
    ]
    n_inactive = len(known_inactive)
    if "density_before" in rows.columns and rows["density_before"].notna().any():
        first = float(rows.sort_values("surgery_step")["density_before"].dropna().iloc[0])
        n_inactive = max(n_inactive, round((1.0 - first) * size))
    uniform = float(np.isin(known_inactive, active).sum()) / max(n_inactive, 1)
    between, hits = _habit(weights, active, last_end, start)
    habit = hits / between if between else float("nan")
    chance = max(uniform, habit) if between else uniform
    fraction = reactivated / len(regrown)
    p_value = stats.binomtest(
        reactivated, len(regrown), min(max(uniform, 1e-12), 1.0), alternative="greater"
    ).pvalue
    if between:
        table = [[reactivated, len(regrown) - reactivated], [hits, between - hits]]
        p_value = max(p_value, stats.fisher_exact(table, alternative="greater").pvalue)
    return {
        "layer": layer,
        "last_seen_step": last_end,
        "return_step": start,
        "regrown": len(regrown),
        "reactivated": reactivated,
        "overlap_fraction": fraction,
        "active_last_seen": len(active),
        "n_inactive": n_inactive,
        "uniform_chance": uniform,
        "habit": habit,
        "chance": chance,
        "lift": fraction / chance if chance > 0 else float("inf"),
        "p_value": float(p_value),
    }


def ghost(
    events: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    period: int | None = None,
    mapping: Mapping[int, object] | None = None,
    layer_sizes: Mapping[str, int] | None = None,
    return_window: int = 5,
    min_lift: float = 2.0,
    min_fraction: float = 0.5,
    min_overlap: int = 3,
    alpha: float = 0.01,
    keep_rejected: bool = False,
) -> pd.DataFrame:
    """Detect ghost-circuit reactivation on the return of a recurring distribution.

    Args:
        events: The ``events`` table (``surgery_step``, ``task_index`` or ``distribution``,
            ``layer``, ``action``, ``count``, ``indices``, ``density_before/after``).
        metrics: The ``metrics`` table (its ``task_index`` refines visit boundaries).
        period: Tasks ``t`` and ``t + period`` are the same distribution.
        mapping: Explicit ``task_index → distribution label`` (wins over ``period``).
        layer_sizes: Number of weights per layer (estimated when absent).
        return_window: Surgery steps at the start of a return whose regrowth is examined.
        min_lift: Least ``overlap_fraction ÷ chance``.
        min_fraction: Least ``overlap_fraction``, in (0, 1]: the old circuit must be this
            share of the return's regrowth.
        min_overlap: Least number of reactivated weights.
        alpha: Significance level of the one-sided tests.
        keep_rejected: Also return the windows examined that fail the criterion (a layer that
            regrew in a return's window and has weights known active when its distribution was
            last seen): the denominator of a false-positive rate.

    Returns:
        One row per detected (replica, layer, return): replica keys, ``layer``,
        ``distribution``, ``last_seen_step`` (end of the previous visit), ``return_step``,
        ``regrown``, ``reactivated``, ``overlap_fraction``, ``active_last_seen``,
        ``n_inactive``, ``uniform_chance``, ``habit``, ``chance``, ``lift``, ``p_value`` and
        ``detected`` (false only on the rows ``keep_rejected`` adds).
    """
    _check(period is None or period >= 1, f"ghost: period must be >= 1, got {period}")
    _check(return_window >= 1, "ghost: return_window must be >= 1")
    _check(min_lift >= 1.0, "ghost: min_lift must be >= 1")
    _check(0.0 < min_fraction <= 1.0, "ghost: min_fraction must be in (0, 1]")
    _check(min_overlap >= 1, "ghost: min_overlap must be >= 1")
    _check(0.0 < alpha < 1.0, "ghost: alpha must be in (0, 1)")
    needed = ["surgery_step", "layer", "action", "count", "indices"]
    if "distribution" not in events.columns:
        needed.append("task_index")
    _require(events, needed, "events", "ghost")
    keys = _replica_keys(events, metrics)
    use_metrics = not metrics.empty and (
        "distribution" in metrics.columns or "task_index" in metrics.columns
    )
    metric_groups = dict(_groups(metrics, keys)) if use_metrics else {}
    out: list[dict[str, Any]] = []
    for key, ev in _groups(events, keys):
        visits = _visits(ev, metric_groups.get(key), period, mapping)
        long = _long_indices(ev, [])
        if long.empty:
            continue
        sizes = _sizes(ev, layer_sizes)
        for i in range(1, len(visits)):
            ret = visits.iloc[i]
            earlier = visits.iloc[:i]
            prev = earlier[earlier["distribution"] == ret["distribution"]]
            if prev.empty:
                continue
            last_end = int(prev["end"].iloc[-1])
            start = int(ret["start"])
            stop = min(int(ret["end"]), start + return_window - 1)
            for layer, weights in long.groupby("layer", sort=True):
                ep = _episode(ev, weights, str(layer), last_end, start, stop, sizes)
                if ep is None:
                    continue
                detected = bool(
                    ep["reactivated"] >= min_overlap
                    and ep["overlap_fraction"] >= min_fraction
                    and ep["lift"] >= min_lift
                    and ep["p_value"] < alpha
                )
                if detected or keep_rejected:
                    row = {**dict(zip(keys, key, strict=True)), **ep}
                    out.append({**row, "distribution": ret["distribution"], "detected": detected})
    return pd.DataFrame(out)[[*keys, *_COLUMNS]] if out else _empty(keys, _COLUMNS)
