"""Synchronized retention: layers that keep their high-Fisher weights under pruning pressure.

The seed's "critical double-loss avoidance": Emrakul learns to refuse pruning weights whose
(contact-aware) Fisher information about rare "tail" data is high, even when their magnitude
is low, so the capacity to process rare samples survives compression.

Criterion, per replica, over *pressure steps* (surgery steps where the replica prunes more
weights than it regrows, or a ``budget`` event sets a target below a layer's density):

* each layer's **Fisher per weight** is ``fisher_trace ÷ (density_before × size)``, the mean
  empirical Fisher of its active weights (``fisher_trace`` sums over them);
* each layer's **prune rate** is the relative density it loses,
  ``(density_before − density_after) ÷ density_before`` summed over its prune rows of the step
  (0 when it is not pruned while others are).

A layer is *retained* when, over at least ``min_steps`` pressure steps, its median Fisher per
weight is at least ``fisher_factor`` × the median over the replica's other layers and its mean
prune rate is at most ``rate_factor`` × theirs. Weight-level evidence from the ``indices``:
``kept_weights`` counts the layer's regrown weights never pruned afterwards although pressure
steps followed.

Layer sizes come from ``layer_sizes``, else from the surgeries that resized the layer (net
count change ÷ density change); a layer of unknown size is left out of the comparison. The
Fisher measure used to be ``fisher_trace ÷ density_before`` ("per unit of density"), which is
the layer's *size* times its Fisher per weight: on real runs of a 64-32-16-10 MLP it ranked the
2,048-weight input layer first (4.7× the others) while the 160-weight output layer holds 3–6×
more Fisher per weight, so a surgeon sparing the output layer's informative weights went
unseen and one sparing the largest layer for any reason would have been called retention
(``tests/analysis/test_detectors_real.py``).

Limits: the events carry no weight magnitudes and only a layer-level Fisher trace, so
"low magnitude" and "contact-aware" cannot be checked per weight; the detector reports the
layer-level signature (pressure, high Fisher per weight, protected from pruning), and needs
at least two layers to compare. A run with a data side records the weight-level evidence
(``serve``, ``protect``, ``retain``, ``evict`` events): the ``double_loss`` detector reads it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from esper.analysis.detectors._common import (
    _check,
    _empty,
    _groups,
    _long_indices,
    _replica_keys,
    _require,
    _sizes,
)

__all__ = ["retention"]

_COLUMNS = [
    "layer",
    "pressure_steps",
    "fisher_per_weight",
    "others_fisher_per_weight",
    "fisher_ratio",
    "prune_rate",
    "others_prune_rate",
    "rate_ratio",
    "kept_weights",
    "detected",
]


def _pressure_steps(ev: pd.DataFrame) -> np.ndarray:
    counts = ev[ev["action"].isin(["prune", "regrow"])].pivot_table(
        index="surgery_step", columns="action", values="count", aggfunc="sum", fill_value=0
    )
    pruned = counts["prune"] if "prune" in counts.columns else pd.Series(0, index=counts.index)
    regrown = counts["regrow"] if "regrow" in counts.columns else pd.Series(0, index=counts.index)
    steps = set(counts.index[pruned > regrown])
    if "value" in ev.columns and "density_before" in ev.columns:
        budget = ev[(ev["action"] == "budget") & (ev["value"] < ev["density_before"])]
        steps |= set(budget["surgery_step"])
    return np.array(sorted(steps), dtype=np.int64)


def _kept_weights(ev: pd.DataFrame, pressure: np.ndarray) -> pd.Series:
    """Per layer: weights whose last event is a regrow that a pressure step follows."""
    long = _long_indices(ev, [])
    if long.empty or len(pressure) == 0:
        return pd.Series(dtype=np.int64)
    last = long.groupby(["layer", "index"]).tail(1)
    kept = last[(last["action"] == "regrow") & (last["surgery_step"] < pressure.max())]
    return kept.groupby("layer")["index"].nunique()


def retention(
    events: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    layer_sizes: Mapping[str, int] | None = None,
    fisher_factor: float = 2.0,
    rate_factor: float = 0.5,
    min_steps: int = 3,
    keep_rejected: bool = False,
) -> pd.DataFrame:
    """Detect synchronized retention (high-Fisher layers spared while the replica prunes).

    Args:
        events: The ``events`` table (``surgery_step``, ``layer``, ``action``, ``count``,
            ``density_before``, ``density_after``, ``fisher_trace``; ``value`` of budget rows
            and ``indices`` when present).
        metrics: Unused (kept for the common detector signature).
        layer_sizes: Number of weights per layer (estimated from resizing surgeries when
            absent; a layer of unknown size is not compared).
        fisher_factor: Least ratio of the layer's Fisher per weight to the other layers'.
        rate_factor: Largest ratio of the layer's prune rate to the other layers'.
        min_steps: Least number of pressure steps with the layer's Fisher trace known.
        keep_rejected: Also return the layers examined (at least ``min_steps`` pressure steps,
            others with Fisher and pruning to compare with) that fail the criterion: the
            denominator of a false-positive rate.

    Returns:
        One row per retained layer: replica keys, ``layer``, ``pressure_steps``,
        ``fisher_per_weight``, ``others_fisher_per_weight``, ``fisher_ratio``,
        ``prune_rate``, ``others_prune_rate``, ``rate_ratio``, ``kept_weights`` and
        ``detected`` (false only on the rows ``keep_rejected`` adds).
    """
    del metrics
    _check(fisher_factor >= 1.0, f"retention: fisher_factor must be >= 1, got {fisher_factor}")
    _check(0.0 <= rate_factor < 1.0, "retention: rate_factor must be in [0, 1)")
    _check(min_steps >= 1, "retention: min_steps must be >= 1")
    _require(
        events,
        [
            "surgery_step",
            "layer",
            "action",
            "count",
            "density_before",
            "density_after",
            "fisher_trace",
        ],
        "events",
        "retention",
    )
    keys = _replica_keys(events)
    out: list[dict[str, object]] = []
    for key, ev in _groups(events, keys):
        ev = ev[ev["layer"] != ""]
        pressure = _pressure_steps(ev)
        if len(pressure) == 0:
            continue
        sizes = _sizes(ev, layer_sizes)
        at = ev[ev["surgery_step"].isin(pressure) & ev["layer"].isin(list(sizes))]
        fisher = at.dropna(subset=["fisher_trace", "density_before"])
        fisher = fisher[fisher["density_before"] > 0]
        size = fisher["layer"].astype(object).map(sizes).astype(float)  # Arrow strings too
        active = fisher["density_before"].astype(float) * size
        per_weight = (
            (fisher["fisher_trace"] / active)
            .groupby([fisher["surgery_step"], fisher["layer"]])
            .median()
            .unstack("layer")
        )
        if per_weight.shape[1] < 2:
            continue
        prunes = at[(at["action"] == "prune") & (at["density_before"] > 0)]
        rate = (prunes["density_before"] - prunes["density_after"]) / prunes["density_before"]
        rate = rate.groupby([prunes["surgery_step"], prunes["layer"]]).sum().unstack("layer")
        rate = rate.reindex(index=per_weight.index, columns=per_weight.columns).fillna(0.0)
        kept = _kept_weights(ev, pressure)
        for layer in per_weight.columns:
            steps = per_weight[layer].notna()
            if int(steps.sum()) < min_steps:
                continue
            others = per_weight.columns.drop(layer)
            own_f = float(per_weight.loc[steps, layer].median())
            other_f = float(np.nanmedian(per_weight.loc[steps, others].to_numpy()))
            own_r = float(rate.loc[steps, layer].mean())
            other_r = float(rate.loc[steps, others].to_numpy().mean())
            if not other_f > 0 or other_r <= 0:
                continue
            f_ratio, r_ratio = own_f / other_f, own_r / other_r
            detected = f_ratio >= fisher_factor and r_ratio <= rate_factor
            if not (detected or keep_rejected):
                continue
            out.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "layer": layer,
                    "pressure_steps": int(steps.sum()),
                    "fisher_per_weight": own_f,
                    "others_fisher_per_weight": other_f,
                    "fisher_ratio": f_ratio,
                    "prune_rate": own_r,
                    "others_prune_rate": other_r,
                    "rate_ratio": r_ratio,
                    "kept_weights": int(kept.get(layer, 0)),
                    "detected": detected,
                }
            )
    return pd.DataFrame(out) if out else _empty(keys, _COLUMNS)
