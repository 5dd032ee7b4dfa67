"""Double loss and synchronized retention, weight by weight, from the data side's events.

The layer-level :func:`~esper.analysis.detectors.retention.retention` detector can only see
layers; a run with a data side (:mod:`esper.workloads.memory`) also records, at each surgery,
the weights serving each tail class (``serve``), the prunes refused because of them
(``protect``), the samples locked because their serving weights exist (``retain`` with reason
``served``) and the samples evicted per class (``evict``). From those this detector reports,
per replica and drift:

* ``protected_weights``: prunes refused because the weights serve a tail class;
* ``tail_samples_kept``: tail samples locked because of the weights that serve them (summed
  over surgeries: a sample held for three surgeries counts three);
* ``tail_samples_evicted``: tail samples evicted;
* ``served_weights_pruned``: serving weights pruned at the surgery they were found serving;
* ``double_loss_cases``: (surgery, tail class) pairs where the class lost samples from the
  buffer *and* at least ``min_pruned`` of its serving weights were pruned in that surgery:
  the specification's double loss.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from esper.analysis.detectors._common import _check, _empty, _groups, _replica_keys, _require

__all__ = ["double_loss"]

_COLUMNS = [
    "drift",
    "surgeries",
    "tail_classes",
    "protected_weights",
    "tail_samples_kept",
    "tail_samples_evicted",
    "served_weights_pruned",
    "double_loss_cases",
]
_DATA_ACTIONS = ("serve", "protect", "retain", "evict")


def _reason(detail: object) -> str:
    try:
        return str(json.loads(str(detail)).get("reason", ""))
    except (ValueError, AttributeError):
        return ""


def _cases(ev: pd.DataFrame, min_pruned: int) -> tuple[int, int]:
    """Served weights pruned, and double-loss cases, over one replica's surgeries."""
    pruned_total, cases = 0, 0
    serve = ev[ev["action"] == "serve"]
    prune = ev[ev["action"] == "prune"]
    evict = ev[ev["action"] == "evict"]
    for step, served in serve.groupby("surgery_step"):
        cut = prune[prune["surgery_step"] == step]
        cut_by_layer = {
            layer: set(np.concatenate([np.asarray(i, dtype=np.int64) for i in rows["indices"]]))
            for layer, rows in cut.groupby("layer")
        }
        lost = evict[(evict["surgery_step"] == step) & (evict["count"] > 0)]
        lost_classes = set(lost["value"].astype(int))
        for label, rows in served.groupby(served["value"].astype(int)):
            hit = sum(
                len(cut_by_layer.get(layer, set()) & set(np.asarray(idx, dtype=np.int64)))
                for layer, idx in zip(rows["layer"], rows["indices"], strict=True)
            )
            pruned_total += hit
            cases += int(hit >= min_pruned and label in lost_classes)
    return pruned_total, cases


def double_loss(
    events: pd.DataFrame, metrics: pd.DataFrame, *, min_pruned: int = 1
) -> pd.DataFrame:
    """Weight- and sample-level retention and double-loss cases, per replica and drift.

    Args:
        events: The ``events`` table (``surgery_step``, ``drift``, ``layer``, ``action``,
            ``count``, ``indices``, ``value``, ``detail``).
        metrics: Unused (kept for the common detector signature).
        min_pruned: Least serving weights of a class pruned for a double-loss case.

    Returns:
        One row per replica and drift with data-side events: replica keys, ``drift``,
        ``surgeries`` (with serving weights found), ``tail_classes``, ``protected_weights``,
        ``tail_samples_kept``, ``tail_samples_evicted``, ``served_weights_pruned`` and
        ``double_loss_cases``. Empty for runs without a data side.
    """
    del metrics
    _check(min_pruned >= 1, f"double_loss: min_pruned must be >= 1, got {min_pruned}")
    _require(
        events,
        ["surgery_step", "drift", "layer", "action", "count", "indices", "value", "detail"],
        "events",
        "double_loss",
    )
    keys = _replica_keys(events)
    if events.empty or not events["action"].isin(_DATA_ACTIONS).any():
        return _empty(keys, _COLUMNS)
    out: list[dict[str, object]] = []
    for key, ev in _groups(events, [*keys, "drift"]):
        serve = ev[ev["action"] == "serve"]
        if serve.empty and not ev["action"].isin(_DATA_ACTIONS).any():
            continue
        tail = set(serve["value"].dropna().astype(int))
        retain = ev[ev["action"] == "retain"]
        kept = retain[retain["detail"].map(_reason) == "served"]
        evict = ev[(ev["action"] == "evict") & ev["value"].isin(list(tail))]
        pruned, cases = _cases(ev, min_pruned)
        out.append(
            {
                **dict(zip([*keys, "drift"], key, strict=True)),
                "surgeries": int(serve["surgery_step"].nunique()),
                "tail_classes": len(tail),
                "protected_weights": int(ev.loc[ev["action"] == "protect", "count"].sum()),
                "tail_samples_kept": int(kept["count"].sum()),
                "tail_samples_evicted": int(evict["count"].sum()),
                "served_weights_pruned": pruned,
                "double_loss_cases": cases,
            }
        )
    return pd.DataFrame(out) if out else _empty(keys, _COLUMNS)
