"""Flip-flop: weights pruned, regrown and pruned again within a few surgeries.

Oscillating masks are wasted surgery (the reward's oscillation term punishes them); the
worst offenders show where the policy cannot make up its mind.

Criterion, per replica and layer, from the ``indices`` of prune and regrow events: a flip is
three consecutive events of the same weight reading prune → regrow → prune with the last at
most ``window`` surgery steps after the first: the pattern that
:func:`esper.measures.regrow_repruned` finds in a window of mask history, here read from the
event log. The layer's ``regrow_reprune_share`` is the share of weights touched by pruning that
flipped at least once (the sensor's share is over all the layer's weights, in its own window of
mask updates); layers with a share ``>= min_share`` and at least one flip are reported, with
their worst offender (weight index and flips). Not the sensor's flip rate (all turnover) nor
the reward's reversal rate (:mod:`esper.measures`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from esper.analysis.detectors._common import (
    _check,
    _empty,
    _long_indices,
    _replica_keys,
    _require,
)

__all__ = ["flipflop", "flipflop_offenders"]

_COLUMNS = [
    "layer",
    "flips",
    "flipping_weights",
    "touched_weights",
    "regrow_reprune_share",
    "surgeries",
    "flips_per_surgery",
    "worst_index",
    "worst_flips",
]


def _flips(events: pd.DataFrame, window: int) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """Replica keys, per-weight flip counts, and the long index frame."""
    keys = _replica_keys(events)
    long = _long_indices(events, keys)
    if long.empty:
        return keys, pd.DataFrame(columns=[*keys, "layer", "index", "flips"]), long
    weight = [*keys, "layer", "index"]
    same = np.ones(len(long), dtype=bool)
    for col in weight:
        col_vals = long[col]
        same &= (col_vals.shift(-2) == col_vals).to_numpy()
    act, step = long["action"], long["surgery_step"]
    flip = (
        same
        & (act == "prune").to_numpy()
        & (act.shift(-1) == "regrow").to_numpy()
        & (act.shift(-2) == "prune").to_numpy()
        & ((step.shift(-2) - step) <= window).to_numpy()
    )
    long = long.assign(flip=flip)
    per_weight = long.groupby(weight, sort=False)["flip"].sum().rename("flips").reset_index()
    return keys, per_weight, long


def flipflop_offenders(events: pd.DataFrame, *, window: int = 10, top: int = 10) -> pd.DataFrame:
    """The ``top`` weights with the most prune → regrow → prune flips within ``window`` steps.

    Returns:
        Replica keys, ``layer``, ``index`` and ``flips``, most flips first.
    """
    _check(window >= 1 and top >= 1, "flipflop: window and top must be >= 1")
    _require(events, ["surgery_step", "layer", "action", "indices"], "events", "flipflop")
    _, per_weight, _ = _flips(events, window)
    per_weight = per_weight[per_weight["flips"] > 0]
    return (
        per_weight.sort_values("flips", ascending=False, kind="stable")
        .head(top)
        .reset_index(drop=True)
    )


def flipflop(
    events: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    window: int = 10,
    min_share: float = 0.0,
) -> pd.DataFrame:
    """Detect flip-flopping layers (prune → regrow → prune of the same weight within a window).

    Args:
        events: The ``events`` table (``surgery_step``, ``layer``, ``action``, ``indices``).
        metrics: Unused (kept for the common detector signature).
        window: Most surgery steps from the first prune to the second.
        min_share: Least share of pruned weights that flipped for a layer to be reported.

    Returns:
        One row per flip-flopping layer: replica keys, ``layer``, ``flips``,
        ``flipping_weights``, ``touched_weights``, ``regrow_reprune_share``, ``surgeries``
        (distinct steps with prune/regrow in the layer), ``flips_per_surgery``, ``worst_index``,
        ``worst_flips``;
        highest share first.
    """
    del metrics
    _check(window >= 1, f"flipflop: window must be >= 1, got {window}")
    _check(0.0 <= min_share <= 1.0, "flipflop: min_share must be in [0, 1]")
    _require(events, ["surgery_step", "layer", "action", "indices"], "events", "flipflop")
    keys, per_weight, long = _flips(events, window)
    if long.empty:
        return _empty(keys, _COLUMNS)
    layer_keys = [*keys, "layer"]
    touched = long[long["action"] == "prune"].groupby(layer_keys)["index"].nunique()
    surgeries = long.groupby(layer_keys)["surgery_step"].nunique()
    flipping = per_weight[per_weight["flips"] > 0]
    if flipping.empty:
        return _empty(keys, _COLUMNS)
    worst = (
        flipping.sort_values("flips", ascending=False, kind="stable").groupby(layer_keys).head(1)
    )
    agg = flipping.groupby(layer_keys).agg(
        flips=("flips", "sum"), flipping_weights=("index", "nunique")
    )
    agg = agg.join(touched.rename("touched_weights")).join(surgeries.rename("surgeries"))
    agg = agg.join(
        worst.set_index(layer_keys)[["index", "flips"]].rename(
            columns={"index": "worst_index", "flips": "worst_flips"}
        )
    )
    agg["regrow_reprune_share"] = agg["flipping_weights"] / agg["touched_weights"]
    agg["flips_per_surgery"] = agg["flips"] / agg["surgeries"]
    agg = agg[agg["regrow_reprune_share"] >= min_share].reset_index()
    agg = agg.sort_values("regrow_reprune_share", ascending=False, kind="stable").reset_index(
        drop=True
    )
    return agg[[*keys, *_COLUMNS]]
