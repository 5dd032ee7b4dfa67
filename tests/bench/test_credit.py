"""The credit measurement: three branches on the same batches, and its summary."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from esper.bench.credit import DEFAULT_CHECKPOINT, credit_summary, format_summary, measure_stream
from esper.bench.quality_suite import Stream

_TINY = Stream(
    "tiny",
    ("workload=digits_permuted", "workload.num_tasks=2", "workload.schedule.params.task_length=100",
     "workload.host.params.hidden=[32]"),
    200,
)  # fmt: skip


@pytest.mark.skipif(not Path(DEFAULT_CHECKPOINT).exists(), reason="run from the checkout")
def test_each_surgery_is_measured_with_without_and_against_its_twin() -> None:
    rows = measure_stream(_TINY, 0.2, 3, DEFAULT_CHECKPOINT, surgeries=4)
    assert [r["surgery"] for r in rows] == [0, 1, 2, 3]
    assert all(r["changed"] > 0 for r in rows)  # the exploring policy operates every time
    # the no-surgery branch trains on the same batches: any difference is the surgery's
    assert any(r["accuracy"] != r["accuracy_without"] for r in rows)
    # the gap before a surgery is the one measured after the previous
    for prev, row in itertools.pairwise(rows):
        assert row["gap_before"] == pytest.approx(prev["accuracy"] - prev["accuracy_twin"])
    summary = credit_summary(rows, resamples=200)
    assert summary["pooled"]["surgeries"] == 4
    assert set(summary["pooled"]["accuracy_term"]) == {"raw", "level", "change"}
    assert "| all (pooled) | 4 |" in format_summary(summary)


def test_the_summary_correlates_each_form_with_the_effect() -> None:
    # effect = a − w; the twin c tracks the phase, so level and change follow the effect
    rows = []
    gap = 0.0
    for j, (phase, effect) in enumerate([(0.2, 0.01), (0.9, -0.02), (0.5, 0.03), (0.7, 0.0),
                                         (0.3, -0.01), (0.8, 0.02)]):  # fmt: skip
        a, c = phase + effect, phase
        rows.append({"stream": "s", "surgery": j, "alpha": 1.0, "accuracy": a,
                     "accuracy_without": phase, "accuracy_twin": c, "gap_before": gap,
                     "reward": a, "spike": 0.0, "epsilon": 0.1, "changed": 1})  # fmt: skip
        gap = a - c
    pooled = credit_summary(rows, resamples=200)["pooled"]
    assert pooled["accuracy_term"]["level"]["r"] == pytest.approx(1.0)
    assert pooled["accuracy_term"]["raw"]["r"] < 0.5
    assert pooled["sd"]["level"] == pytest.approx(pooled["sd"]["effect"])
    assert pooled["reward"]["before"]["r"] == pytest.approx(pooled["reward"]["raw"]["r"])
