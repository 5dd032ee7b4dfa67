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
  buffer *and* the surgery cut at least ``min_share`` of the class's serving weights (summed
  over layers): the specification's double loss.

Why a share of the class's serving weights, a quarter by default: the count used to need one
pruned serving weight, and so counted evictions. A class's serving weights are 2% of each
layer's active weights (``serve_fraction``) and a sparse surgeon's surgery prunes tens of
percent of a layer, so every eviction on the double-loss bench (``esper bench double-loss``,
preset ``small``) coincided with some serving weight pruned: trained Emrakul and RigL scored the
same cases per seed (13, 12, 18, 18, 18) although Emrakul pruned 545–970 serving weights and
RigL 1,326–2,519. A case is now a cut that removes a substantial part of what serves the
class at once: a quarter is about what a surgery that does not look at the serving weights
takes at RigL's drop fraction (α = 0.3), and RigL's cases on that bench cut 27–77% (median
44%) of the class's serving weights, so it keeps counting RigL's double losses while a
surgeon that cuts the serving weights less than its turnover stops scoring them.
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


def _cases(ev: pd.DataFrame, min_share: float) -> tuple[int, int]:
    """Served weights pruned, and double-loss cases, over one replica's surgeries."""
    pruned_total, cases = 0, 0
    serve = ev[ev["action"] == "serve"]
    prune = ev[ev["action"] == "prune"]
    evict = ev[ev["action"] == "evict"]
    for step, served in serve.groupby("surgery_step"):
        cut = prune[prune["surgery_step"] == step]
        cut_by_layer = {
            layer: set(
                np.concatenate([np.asarray(i, dtype=np.int64) for i in rows["indices"]]).tolist()
            )
            for layer, rows in cut.groupby("layer")
        }
        lost = evict[(evict["surgery_step"] == step) & (evict["count"] > 0)]
        lost_classes = set(lost["value"].astype(int))
        for label, rows in served.groupby(served["value"].astype(int)):
            serving = {
                layer: set(np.asarray(idx, dtype=np.int64).tolist())
                for layer, idx in zip(rows["layer"], rows["indices"], strict=True)
            }
            hit = sum(len(cut_by_layer.get(layer, set()) & w) for layer, w in serving.items())
            size = sum(len(w) for w in serving.values())
            pruned_total += hit
            cases += int(hit > 0 and hit >= min_share * size and label in lost_classes)
    return pruned_total, cases


def double_loss(
    events: pd.DataFrame, metrics: pd.DataFrame, *, min_share: float = 0.25
) -> pd.DataFrame:
    """Weight- and sample-level retention and double-loss cases, per replica and drift.

    Args:
        events: The ``events`` table (``surgery_step``, ``drift``, ``layer``, ``action``,
            ``count``, ``indices``, ``value``, ``detail``).
        metrics: Unused (kept for the common detector signature).
        min_share: Least share of a class's serving weights (over all layers) pruned in one
            surgery for a double-loss case, in (0, 1].

    Returns:
        One row per replica and drift with data-side events: replica keys, ``drift``,
        ``surgeries`` (with serving weights found), ``tail_classes``, ``protected_weights``,
        ``tail_samples_kept``, ``tail_samples_evicted``, ``served_weights_pruned`` and
        ``double_loss_cases``. Empty for runs without a data side.
    """
    del metrics
    _check(0.0 < min_share <= 1.0, f"double_loss: min_share must be in (0, 1], got {min_share}")
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
        pruned, cases = _cases(ev, min_share)
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
