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
  the return. ``overlap_fraction = |R ∩ A| / |R|`` is compared with the chance a uniformly
  random regrowth from the inactive weights lands in ``A``:
  ``chance = |A ∩ inactive| / n_inactive``, where ``n_inactive`` is estimated from the first
  regrow row's ``density_before`` and the layer size (``layer_sizes`` or, failing that, the
  count ÷ density change of the layer's events, or the largest index + 1). A one-sided
  binomial test gives ``p_value``; episodes with ``lift >= min_lift``, ``p_value < alpha``
  and at least ``min_overlap`` reactivated weights are reported.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    "chance",
    "lift",
    "p_value",
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


def _layer_size(
    ev: pd.DataFrame, long: pd.DataFrame, layer_sizes: Mapping[str, int] | None, layer: str
) -> int:
    if layer_sizes is not None and layer in layer_sizes:
        return int(layer_sizes[layer])
    rows = ev[(ev["layer"] == layer) & ev["action"].isin(["prune", "regrow"])]
    if {"density_before", "density_after"} <= set(rows.columns):
        delta = (rows["density_after"] - rows["density_before"]).abs()
        ok = (delta > 0) & (rows["count"] > 0)
        if ok.any():
            return max(round(float(np.median(rows["count"][ok] / delta[ok]))), 1)
    return int(long["index"].max()) + 1


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


def ghost(
    events: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    period: int | None = None,
    mapping: Mapping[int, object] | None = None,
    layer_sizes: Mapping[str, int] | None = None,
    return_window: int = 5,
    min_lift: float = 2.0,
    min_overlap: int = 3,
    alpha: float = 0.01,
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
        min_overlap: Least number of reactivated weights.
        alpha: Significance level of the one-sided binomial test.

    Returns:
        One row per (replica, layer, return): replica keys, ``layer``, ``distribution``,
        ``last_seen_step`` (end of the previous visit), ``return_step``, ``regrown``,
        ``reactivated``, ``overlap_fraction``, ``active_last_seen``, ``n_inactive``, ``chance``,
        ``lift`` and ``p_value``.
    """
    _check(period is None or period >= 1, f"ghost: period must be >= 1, got {period}")
    _check(return_window >= 1, "ghost: return_window must be >= 1")
    _check(min_lift >= 1.0, "ghost: min_lift must be >= 1")
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
    out: list[dict[str, object]] = []
    for key, ev in _groups(events, keys):
        visits = _visits(ev, metric_groups.get(key), period, mapping)
        long = _long_indices(ev, [])
        if long.empty:
            continue
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
                grown = weights[
                    (weights["action"] == "regrow") & weights["surgery_step"].between(start, stop)
                ]
                if grown.empty:
                    continue
                regrown = grown["index"].unique()
                active = _active_at(weights, last_end, start)
                if len(active) == 0:
                    continue
                reactivated = int(np.isin(regrown, active).sum())
                known_inactive = np.union1d(_inactive_before(weights, start), regrown)
                size = _layer_size(ev, long, layer_sizes, str(layer))
                rows = ev[
                    (ev["layer"] == layer)
                    & (ev["action"] == "regrow")
                    & ev["surgery_step"].between(start, stop)
                ]
                n_inactive = len(known_inactive)
                if "density_before" in rows.columns and rows["density_before"].notna().any():
                    first = float(
                        rows.sort_values("surgery_step")["density_before"].dropna().iloc[0]
                    )
                    n_inactive = max(n_inactive, round((1.0 - first) * size))
                chance = float(np.isin(known_inactive, active).sum()) / max(n_inactive, 1)
                fraction = reactivated / len(regrown)
                lift = fraction / chance if chance > 0 else float("inf")
                p_value = float(
                    stats.binomtest(
                        reactivated,
                        len(regrown),
                        min(max(chance, 1e-12), 1.0),
                        alternative="greater",
                    ).pvalue
                )
                if reactivated < min_overlap or lift < min_lift or p_value >= alpha:
                    continue
                out.append(
                    {
                        **dict(zip(keys, key, strict=True)),
                        "layer": layer,
                        "distribution": ret["distribution"],
                        "last_seen_step": last_end,
                        "return_step": start,
                        "regrown": len(regrown),
                        "reactivated": reactivated,
                        "overlap_fraction": fraction,
                        "active_last_seen": len(active),
                        "n_inactive": n_inactive,
                        "chance": chance,
                        "lift": lift,
                        "p_value": p_value,
                    }
                )
    return pd.DataFrame(out) if out else _empty(keys, _COLUMNS)
