"""Quality metrics of one run and the suite summary (intervals, paired differences)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esper.analysis.quality import (
    SUITE,
    RunScore,
    markdown_tables,
    paired_differences,
    plasticity_summary,
    run_metrics,
    summarize,
    task_end_accuracies,
)


def test_task_end_is_the_last_tenth_of_each_task() -> None:
    acc = np.r_[np.zeros(18), np.ones(2), np.full(20, 0.5)]
    assert task_end_accuracies(acc, 20).tolist() == [1.0, 0.5]


def test_run_metrics_on_a_hand_made_stream() -> None:
    # Task 0 climbs to 0.8; task 1 starts at 0 and is back to 0.72 (= 90% of 0.8) after 5 steps;
    # task 2 never gets back (censored at its length, 10 steps).
    t0 = np.full(10, 0.8)
    t1 = np.r_[np.zeros(4), np.full(6, 0.8)]
    t2 = np.full(10, 0.1)
    m = run_metrics(np.r_[t0, t1, t2], 10, density=0.1, flops=0.12, reversal_rate=0.01,
                    recovery_window=1)  # fmt: skip
    assert m["online_accuracy"] == pytest.approx((8 + 4.8 + 1) / 30)
    assert m["task_end_accuracy"] == pytest.approx((0.8 + 0.8 + 0.1) / 3)
    assert m["recovery_steps"] == pytest.approx((5 + 10) / 2)
    assert m["plasticity"] == pytest.approx(0.1 - 0.8)  # last fifth (1 task) − first fifth
    assert (m["final_density"], m["flops"], m["reversal_rate"]) == (0.1, 0.12, 0.01)


def test_run_metrics_refuses_an_empty_run_and_leaves_one_task_without_drift_metrics() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        run_metrics([], 10, 1.0, 1.0, 0.0)
    m = run_metrics([0.5] * 10, 10, 1.0, 1.0, 0.0)
    assert math.isnan(m["recovery_steps"]) and math.isnan(m["plasticity"])


def _scores(shift: float, noise: float = 0.02, seeds: int = 5) -> list[RunScore]:
    rng = np.random.default_rng(0)
    out = []
    for stream, level in (("a", 0.6), ("b", 0.8), ("c", 0.7)):
        for seed in range(seeds):
            base = level + rng.normal(0, 0.05)  # a hard stream/seed is hard for everyone
            for policy, density, delta in (
                ("rigl", 0.1, 0.0),
                ("emrakul", 0.1, shift),
                ("set", 0.1, 0.0),
                ("dense", 1.0, 0.2),
                ("emrakul", 0.05, shift),
                ("rigl", 0.05, 0.0),
                ("no_general", 0.1, 0.0),
            ):
                acc = base + delta + rng.normal(0, noise)
                metrics = {"online_accuracy": acc, "task_end_accuracy": acc,
                           "recovery_steps": 10.0, "plasticity": 0.0, "final_density": density,
                           "flops": density, "reversal_rate": 0.0}  # fmt: skip
                out.append(RunScore(policy, density, stream, seed, metrics))
    return out


def test_a_known_difference_is_detected_and_an_absent_one_is_not() -> None:
    scores = _scores(shift=0.05)
    better = paired_differences(scores, "emrakul", "rigl", 0.1, 0.1, "online_accuracy")
    assert better.excludes(0.0) and better.mean == pytest.approx(0.05, abs=0.01)
    assert better.n == 15  # 3 streams × 5 seeds
    same = paired_differences(_scores(shift=0.0), "emrakul", "set", 0.1, 0.1, "online_accuracy")
    assert not same.excludes(0.0)
    one = paired_differences(scores, "emrakul", "rigl", 0.1, 0.1, "online_accuracy", "a")
    assert one.n == 5


def test_summarize_pairs_within_a_density_and_against_dense() -> None:
    results, paired = summarize(_scores(shift=0.05), "emrakul")
    suite = {(r["policy"], r["density"]) for r in results if r["stream"] == SUITE}
    assert ("emrakul", 0.05) in suite and ("dense", 1.0) in suite
    rigl = next(r for r in results if (r["policy"], r["density"], r["stream"]) ==
                ("rigl", 0.1, SUITE))  # fmt: skip
    assert rigl["online_accuracy"]["n"] == 5  # per seed, the mean over the streams
    pairs = {(p["vs"], p["density"]) for p in paired}
    assert pairs == {("rigl", 0.1), ("set", 0.1), ("dense", 0.1), ("no_general", 0.1),
                     ("rigl", 0.05), ("dense", 0.05)}  # fmt: skip
    row = next(p for p in paired if (p["vs"], p["density"], p["stream"], p["metric"]) ==
               ("rigl", 0.1, SUITE, "online_accuracy"))  # fmt: skip
    assert row["better"] == "better" and row["ci"][0] > 0
    dense = next(p for p in paired if (p["vs"], p["density"], p["stream"], p["metric"]) ==
                 ("dense", 0.05, SUITE, "online_accuracy"))  # fmt: skip
    assert dense["better"] == "worse" and dense["vs_density"] == 1.0
    recovery = next(p for p in paired if p["metric"] == "recovery_steps")
    assert recovery["better"] == "unresolved"  # identical everywhere: no difference
    table = markdown_tables(results, paired)
    assert "| emrakul | 0.1 |" in table and "| rigl | 0.1 |" in table
    assert "| dense @ 1 | 0.05 |" in table  # the paired row names the other density
    partial = [s for s in _scores(0.0) if s.policy != "set" or s.stream == "a"]
    assert "| set (a only) | 0.1 |" in markdown_tables(*summarize(partial, "emrakul"))


def test_plasticity_summary_finds_a_declining_and_a_flat_learner() -> None:
    rows = []
    for seed in range(4):
        decline = [0.9 - 0.01 * t + 0.001 * seed for t in range(20)]
        flat = [0.9 + 0.001 * seed] * 20
        rows += [
            {"policy": "dense", "density": 1.0, "stream": "p", "seed": seed,
             "task_end_accuracy": decline},
            {"policy": "cbp", "density": 1.0, "stream": "p", "seed": seed,
             "task_end_accuracy": flat},
            {"policy": "cbp", "density": 1.0, "stream": "other", "seed": seed,
             "task_end_accuracy": decline},
        ]  # fmt: skip
    summary = {r["policy"]: r for r in plasticity_summary(rows, "p")}
    assert summary["dense"]["slope_per_task"]["mean"] == pytest.approx(-0.01)
    assert summary["cbp"]["slope_per_task"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert summary["dense"]["early"]["mean"] > summary["dense"]["late"]["mean"]
    assert summary["dense"]["tasks"] == 20
