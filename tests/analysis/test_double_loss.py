"""The double_loss detector on hand-made data-side events."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from esper.analysis.detectors import DETECTORS, double_loss
from esper.events.record import SurgicalEvent

_ID = {"run_id": "run", "trial_id": "t0", "replica_id": 0, "drift": "imbalance+permute"}


def _row(step: int, layer: str, action: str, indices=(), value=float("nan"), count=None,
         reason: str = "") -> dict:  # fmt: skip
    indices = list(indices)
    return SurgicalEvent(
        **_ID, task_index=0, sgd_step=10 * step, surgery_step=step, layer=layer, action=action,
        count=len(indices) if count is None else count, indices=indices, value=value,
        detail=json.dumps({"reason": reason}) if reason else "",
    ).to_row()  # fmt: skip


def test_a_class_that_loses_samples_and_serving_weights_together_is_one_case():
    rows = [
        # surgery 1: class 7 served by w 3, 4 of "a"; 4 is pruned and two 7s are evicted
        _row(1, "a", "serve", [3, 4], value=7.0),
        _row(1, "a", "prune", [4, 9]),
        _row(1, "", "evict", value=7.0, count=2, reason="replaced"),
        # class 8 loses serving weights but no samples: not a case
        _row(1, "a", "serve", [9], value=8.0),
        # surgery 2: class 7 loses samples, its serving weights are kept (protected)
        _row(2, "a", "serve", [3], value=7.0),
        _row(2, "a", "protect", [3], value=7.0),
        _row(2, "a", "prune", [11]),
        _row(2, "", "evict", value=7.0, count=1, reason="replaced"),
        _row(2, "", "retain", value=7.0, count=4, reason="served"),
        _row(2, "", "retain", value=1.0, count=9, reason="selected"),
    ]
    found = double_loss(pd.DataFrame(rows), pd.DataFrame())
    assert len(found) == 1
    row = found.iloc[0]
    assert row["drift"] == "imbalance+permute" and row["surgeries"] == 2
    assert row["tail_classes"] == 2
    assert row["served_weights_pruned"] == 2  # w 4 (class 7) and w 9 (class 8) at surgery 1
    assert row["double_loss_cases"] == 1
    assert row["protected_weights"] == 1 and row["tail_samples_kept"] == 4
    assert row["tail_samples_evicted"] == 3


def test_a_case_needs_a_meaningful_share_of_the_serving_weights_cut():
    rows = [_row(1, "a", "serve", [3, 4], value=7.0), _row(1, "a", "prune", [4]),
            _row(1, "", "evict", value=7.0, count=1, reason="replaced")]  # fmt: skip
    assert double_loss(pd.DataFrame(rows), pd.DataFrame()).iloc[0]["double_loss_cases"] == 1
    assert double_loss(pd.DataFrame(rows), pd.DataFrame(), min_share=0.75).iloc[0][
        "double_loss_cases"] == 0  # fmt: skip
    # One of a class's 12 serving weights (over two layers) cut while it loses samples: an
    # eviction, not a double loss (it used to count as one)
    grazed = [_row(1, "a", "serve", range(8), value=7.0), _row(1, "b", "serve", [0, 1, 2, 3],
              value=7.0), _row(1, "b", "prune", [3, 50]),
              _row(1, "", "evict", value=7.0, count=2, reason="replaced")]  # fmt: skip
    row = double_loss(pd.DataFrame(grazed), pd.DataFrame()).iloc[0]
    assert row["served_weights_pruned"] == 1 and row["double_loss_cases"] == 0
    plain = pd.DataFrame([_row(1, "a", "prune", [4]), _row(1, "a", "regrow", [5])])
    assert double_loss(plain, pd.DataFrame()).empty
    assert "double_loss" in DETECTORS
    with pytest.raises(ValueError, match="min_share"):
        double_loss(plain, pd.DataFrame(), min_share=0.0)
