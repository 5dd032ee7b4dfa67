"""Prequential learning: the dense network's accuracy drops at a drift, and per-task summaries."""

from __future__ import annotations

import pytest

from esper.conf import compose
from esper.workloads.factory import build_host, build_optimizer, build_stream
from esper.workloads.prequential import StepRecord, prequential_step, summarize_tasks


def test_dense_mlp_accuracy_drops_right_after_a_permutation_drift() -> None:
    cfg = compose(
        ["workload.num_tasks=2", "workload.schedule.params.task_length=250", "experiment.seed=0"]
    )
    stream = build_stream(cfg.workload, seed=0)
    model = build_host(cfg.workload, stream, seed=0)
    optimizer = build_optimizer(cfg.workload, model)
    records = [prequential_step(model, optimizer, batch, "classification") for batch in stream]
    before = sum(r.accuracy for r in records[230:250]) / 20
    after = sum(r.accuracy for r in records[250:270]) / 20
    assert before > 0.75, f"the network should have learned task 0 (got {before:.3f})"
    assert after < before - 0.3, (
        f"accuracy right after the drift {after:.3f} vs before {before:.3f}"
    )
    summaries = summarize_tasks(records, window=20)
    assert summaries[1].first_accuracy == pytest.approx(after)
    assert summaries[0].last_accuracy == pytest.approx(before)


def test_summaries_measure_drop_and_recovery_on_scripted_records() -> None:
    accuracy = [0.2] * 5 + [0.9] * 5 + [0.1] * 4 + [0.95] * 6
    records = [StepRecord(i, i // 10, 1.0 - a, a, 0.0) for i, a in enumerate(accuracy)]
    first, second = summarize_tasks(records, window=2)
    assert (first.first_accuracy, first.last_accuracy, first.recovery_steps) == (0.2, 0.9, None)
    assert second.first_accuracy == pytest.approx(0.1)
    # running mean over 2 steps first reaches 0.9 at offsets 4..5 → recovered after 6 steps
    assert second.recovery_steps == 6
    assert second.accuracy == pytest.approx((0.4 + 5.7) / 10)
