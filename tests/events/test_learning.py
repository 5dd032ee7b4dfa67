"""Learning curves in the run directory: one row per iteration, repeated iterations replaced."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from esper.events.learning import LEARNING_DIR, read_learning_curves, record_iteration


def test_rows_round_trip_and_a_restored_member_replaces_its_later_rows(tmp_path: Path) -> None:
    for i in (1, 2, 3):
        row = {"iteration": i, "online_accuracy": 0.1 * i, "loss": math.nan, "obj": object()}
        record_iteration(tmp_path, "t0", row)
    record_iteration(tmp_path, "t1", {"iteration": 1, "online_accuracy": 0.9})
    record_iteration(tmp_path, "t0", {"iteration": 2, "online_accuracy": 0.7})  # restored at 1
    rows = read_learning_curves(tmp_path)
    assert [(r["trial"], r["iteration"]) for r in rows] == [("t0", 1), ("t0", 2), ("t1", 1)]
    assert rows[1]["online_accuracy"] == 0.7
    assert rows[0]["loss"] is None and "obj" not in rows[0]  # NaN → null; objects left out
    assert sorted(p.name for p in (tmp_path / LEARNING_DIR).iterdir()) == ["t0.jsonl", "t1.jsonl"]


def test_a_damaged_curve_is_named(tmp_path: Path) -> None:
    assert read_learning_curves(tmp_path) == []
    (tmp_path / LEARNING_DIR).mkdir()
    (tmp_path / LEARNING_DIR / "t0.jsonl").write_text('{"iteration": 1}\n{"iter')
    with pytest.raises(ValueError, match=r"t0.jsonl:2 is not a JSON object"):
        read_learning_curves(tmp_path)
