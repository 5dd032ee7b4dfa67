"""Quality metrics of one run and the suite summary (intervals, paired differences)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esper.analysis.quality import (
    SUITE,
    RunScore,
    between_runs,
    paired_differences,
    plasticity_summary,
    run_metrics,
    summarize,
    task_end_accuracies,
)
from esper.analysis.quality_tables import markdown_runs, markdown_tables


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


def _runs_scores() -> list[RunScore]:
    """Three training runs: RL adds 0.04, 0.02 and nothing over each run's own imitation."""
    rng = np.random.default_rng(1)
    out = []
    for stream in ("a", "b"):
        for seed in range(6):
            base = 0.6 + rng.normal(0, 0.05)
            for run, (gain, shift) in enumerate(((0.04, 0.0), (0.02, 0.01), (0.0, -0.01))):
                suffix = f"_run{run}" if run else ""
                for policy, acc in ((f"emrakul{suffix}", base + shift + gain),
                                    (f"emrakul_imitation_only{suffix}", base + shift)):  # fmt: skip
                    metrics = {"online_accuracy": acc + rng.normal(0, 0.002)}
                    out.append(RunScore(policy, 0.1, stream, seed, metrics))
    return out


def test_between_runs_gives_each_runs_gain_over_imitation_and_the_spread() -> None:
    labels = [("emrakul", "emrakul_imitation_only"),
              ("emrakul_run1", "emrakul_imitation_only_run1"),
              ("emrakul_run2", "emrakul_imitation_only_run2")]  # fmt: skip
    summary = between_runs(_runs_scores(), labels, 0.1)
    runs = summary["runs"]
    assert [r["run"] for r in runs] == [0, 1, 2]
    gains = [r["rl_over_imitation"]["mean_diff"] for r in runs]
    assert gains == pytest.approx([0.04, 0.02, 0.0], abs=0.003)
    assert [r["rl_over_imitation"]["better"] for r in runs][:2] == ["better", "better"]
    assert runs[0]["rl_over_imitation"]["n"] == 12  # 2 streams × 6 seeds
    means = [r["suite_mean"] for r in runs]
    assert summary["min"] == min(means) and summary["max"] == max(means)
    assert summary["sd"] == pytest.approx(float(np.std(means, ddof=1)))
    assert means[0] - means[2] == pytest.approx(0.05, abs=0.003)
    table = markdown_runs(summary)
    assert "| 2 (emrakul_run2) |" in table and "Between 3 training runs at density 0.1" in table
    # a run without its imitation snapshot, and a single run: no difference, no spread
    alone = between_runs(_runs_scores(), [("emrakul", "missing")], 0.1)
    assert alone["runs"][0]["rl_over_imitation"] is None and alone["sd"] is None
    assert "Between" not in markdown_runs(alone) and "| — | — | — |" in markdown_runs(alone)


def test_markdown_names_each_baselines_allocation() -> None:
    results, paired = summarize(_scores(shift=0.05), "emrakul")
    table = markdown_tables(results, paired, {("rigl", 0.1): "uniform", ("rigl", 0.05): "erk"})
    assert "| policy | density | allocation |" in table
    assert "| rigl | 0.1 | uniform |" in table and "| rigl | 0.05 | erk |" in table
    assert "| emrakul | 0.1 | — |" in table and "| rigl (uniform) | 0.1 |" in table
    assert "allocation" not in markdown_tables(results, paired)
