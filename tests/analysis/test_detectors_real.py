"""The breathing, ghost-circuit and synchronized-retention detectors validated on real runs.

Every run here is real: tiny organisms (:data:`tests.organisms.TINY_ORGANISM`) learning a
drifting digits stream, their surgeries recorded by the run recorder's Parquet event writer and
read back by :func:`esper.analysis.runs.load_run` (:mod:`tests.analysis._real_runs`).

* **Planted**: a surgeon performs the strategy on purpose (``rigl_elastic`` breathes after
  every detected drift; the scripted surgeons of :mod:`tests.analysis.scripted_surgeons` keep
  ghost circuits and spare the high-Fisher layer) and the detector must find it.
* **Null**: real RigL and static sparse runs, which have no such strategy; the detectors may
  fire on at most 5% of the *windows* they examine (each detector's ``keep_rejected=True``
  returns every window examined, detected or not):

  - breathing: one replica's active-parameter series over its run (every replica with at least
    ``min_steps`` surgeries);
  - ghost: one (replica, layer, return of a recurring distribution) in which the layer regrew
    weights and has weights known active when that distribution was last seen;
  - retention: one (replica, layer) with at least ``min_steps`` pressure steps (more weights
    pruned than regrown) and other layers to compare with.

  RigL only swaps (its active count never moves, it never prunes more than it regrows) and
  static prunes once, so breathing and retention examine their runs and find them flat or
  without pressure; the nulls that put those two detectors under load are real runs of other
  surgeons without the strategy: GMP (a pruning staircase, periodic but never rising) and
  ``rigl_elastic`` (pressure in every layer alike, no Fisher preference).

The null streams are those of the planted tests, so a detector cannot pass by seeing nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from esper.analysis.detectors import breathing, ghost, retention
from esper.analysis.runs import Run
from tests.analysis._real_runs import LAYER_SIZES, baseline_run, scripted_run
from tests.analysis.scripted_surgeons import GhostSurgeon, SparingSurgeon

MAX_FALSE_POSITIVE_RATE = 0.05

_LEARNS = [
    "policy.surgery_interval=10",
    "workload.lr=0.1",
    "workload.schedule.params.task_length=100",
]
"""K = 10 and a learning rate at which the tiny organism learns enough in 100 steps for a
task switch to raise its loss (``rigl_elastic``'s drift detector needs that)."""
PERMUTED = ["workload=digits_permuted", "workload.num_tasks=4", *_LEARNS]
"""Four tasks A→B→C→D: three drifts, 40 surgeries."""
RECURRING = ["workload=digits_recurring", "workload.num_tasks=6", *_LEARNS]
"""Six tasks A→B→A→B→A→B (pattern [0, 1]): four returns, 60 surgeries."""
PATTERN = (0, 1)
RIGL = ["policy.params.delta_t=10", "policy.params.t_end=100000"]
"""RigL swapping at every surgery for the whole run (ΔT = K, as the rigl config's defaults)."""
ELASTIC = [*PERMUTED, "policy.params.delta_t=10"]


def _assert_null(windows: pd.DataFrame) -> None:
    """At most :data:`MAX_FALSE_POSITIVE_RATE` of the examined windows detected."""
    hits = int(windows["detected"].astype(bool).sum())
    assert hits <= MAX_FALSE_POSITIVE_RATE * len(windows), windows.to_string()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


def _fresh(storage: Path, name: str) -> Path:
    path = storage / name
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def null_runs(storage: Path) -> dict[str, Run]:
    """RigL on two seeds and static (built at the budget, and pruned once from dense), on the
    recurring stream."""
    runs = {
        f"rigl-s{seed}": baseline_run(
            _fresh(storage, f"rigl-s{seed}"), "rigl", [*RECURRING, *RIGL, f"experiment.seed={seed}"]
        )
        for seed in (0, 1)
    }
    runs["static"] = baseline_run(_fresh(storage, "static"), "static", RECURRING)
    runs["static-from-dense"] = baseline_run(
        _fresh(storage, "static-dense"),
        "static",
        [*RECURRING, "policy.density=1.0", "+policy.params.density=0.2"],
    )
    return runs


@pytest.fixture(scope="module")
def elastic_run(storage: Path) -> Run:
    """``rigl_elastic`` on the permuted stream: breathing's planted run, a retention null."""
    return baseline_run(_fresh(storage, "rigl_elastic"), "rigl_elastic", ELASTIC)


@pytest.fixture(scope="module")
def gmp_run(storage: Path) -> Run:
    """GMP on the permuted stream: pruning pressure on a schedule, alike in every layer."""
    return baseline_run(_fresh(storage, "gmp"), "gmp", PERMUTED)


# --- Breathing ------------------------------------------------------------------------------


def test_breathing_found_in_a_real_rigl_elastic_run(elastic_run: Run) -> None:
    """``rigl_elastic`` doubles its density at each of the three detected drifts and decays
    back: the detector finds the 10-surgery period (the task length), from the metrics' active
    parameters and from the events' densities alike, and its coupling to novelty."""
    run = elastic_run
    found = breathing(run.events, run.metrics)
    assert len(found) == 1, breathing(run.events, run.metrics, keep_rejected=True).to_string()
    ep = found.iloc[0]
    assert ep["source"] == "active_params" and ep["period"] == pytest.approx(10.0)
    assert ep["inhale"] > 0.4 and bool(ep["novelty_coupled"])
    from_events = breathing(run.events, run.metrics.drop(columns="active_params"))
    assert len(from_events) == 1 and from_events.iloc[0]["source"] == "density"
    assert from_events.iloc[0]["period"] == pytest.approx(10.0, abs=0.5)


def test_breathing_null_on_real_rigl_and_static_runs(null_runs: dict[str, Run]) -> None:
    """Window: one replica's active-parameter series. RigL and static hold a constant count
    (static from dense: one step down)."""
    windows = pd.concat(
        [breathing(run.events, run.metrics, keep_rejected=True) for run in null_runs.values()]
    )
    assert len(windows) == len(null_runs)
    _assert_null(windows)


def test_breathing_null_on_a_real_gmp_run(gmp_run: Run) -> None:
    """GMP's pruning staircase is periodic once detrended but never rises (the former
    criterion called it breathing)."""
    windows = breathing(gmp_run.events, gmp_run.metrics, keep_rejected=True)
    assert len(windows) == 1
    _assert_null(windows)
    assert windows.iloc[0]["strength"] > 0.2 and windows.iloc[0]["acf"] > 0.3
    assert windows.iloc[0]["inhale"] == 0.0


# --- Ghost circuits -------------------------------------------------------------------------


def test_ghost_circuits_found_in_a_real_run(tmp_path: Path) -> None:
    """The scripted surgeon puts a quarter of each layer to sleep when A (or B) leaves and
    wakes exactly that set when it returns: every (layer, return) is found, all of the return's
    regrowth being the old circuit."""
    surgeon = GhostSurgeon(PATTERN)
    run = scripted_run(tmp_path, surgeon, [*RECURRING, "policy.density=0.2"])
    assert surgeon.switches == 5
    windows = ghost(run.events, run.metrics, period=len(PATTERN), keep_rejected=True)
    assert len(windows) == 4 * len(LAYER_SIZES)  # returns at tasks 2, 3, 4, 5
    assert windows["detected"].all(), windows.to_string()
    assert (windows["overlap_fraction"] == 1.0).all()
    assert list(windows["return_step"].unique()) == [20, 30, 40, 50]
    sized = ghost(run.events, run.metrics, period=len(PATTERN), layer_sizes=LAYER_SIZES)
    assert len(sized) == len(windows)


def test_ghost_null_on_real_rigl_and_static_runs(null_runs: dict[str, Run]) -> None:
    """Window: one (replica, layer, return). RigL's gradient regrowth restores part of the
    input layer's old circuit when a permutation returns (up to 3.7× its own habit), but mixed
    into its turnover: never half of what it regrows. Static never regrows: no window."""
    windows = {
        name: ghost(run.events, run.metrics, period=len(PATTERN), keep_rejected=True)
        for name, run in null_runs.items()
    }
    for name in ("rigl-s0", "rigl-s1"):
        assert len(windows[name]) == 4 * len(LAYER_SIZES)
        assert windows[name]["overlap_fraction"].max() < 0.5
    assert windows["static"].empty and windows["static-from-dense"].empty
    _assert_null(pd.concat(windows.values()))


@pytest.mark.slow
def test_ghost_null_on_six_rigl_seeds(tmp_path: Path) -> None:
    """The ghost null over 6 seeds (72 windows)."""
    windows = pd.concat(
        [
            ghost(run.events, run.metrics, period=len(PATTERN), keep_rejected=True)
            for run in (
                baseline_run(
                    _fresh(tmp_path, f"s{seed}"),
                    "rigl",
                    [*RECURRING, *RIGL, f"experiment.seed={seed}"],
                )
                for seed in range(6)
            )
        ]
    )
    assert len(windows) == 72
    _assert_null(windows)


# --- Synchronized retention -----------------------------------------------------------------


def test_retention_found_in_a_real_run(tmp_path: Path) -> None:
    """The scripted surgeon prunes 3% of every layer per surgery but spares the layer of most
    Fisher per active weight (the output layer): found, with its Fisher per weight over twice
    the others' while they lose weights and it loses none."""
    surgeon = SparingSurgeon()
    run = scripted_run(tmp_path, surgeon, [*PERMUTED, "policy.density=0.4"])
    assert surgeon.spared == "layers.2.weight"
    found = retention(run.events, run.metrics, layer_sizes=LAYER_SIZES)
    assert list(found["layer"]) == [surgeon.spared], retention(
        run.events, run.metrics, layer_sizes=LAYER_SIZES, keep_rejected=True
    ).to_string()
    ep = found.iloc[0]
    assert ep["pressure_steps"] == 39 and ep["prune_rate"] == 0.0
    assert ep["fisher_ratio"] > 2.0
    # Never resized, the spared layer's size is not on the log: it cannot be compared unless
    # the sizes are given (the others' are estimated from their prunes).
    assert surgeon.spared not in set(retention(run.events, run.metrics, keep_rejected=True).layer)


def test_retention_null_on_real_rigl_static_gmp_and_elastic_runs(
    null_runs: dict[str, Run], gmp_run: Run, elastic_run: Run
) -> None:
    """Window: one (replica, layer) with at least 3 pressure steps. RigL never prunes more than
    it regrows and static prunes once: no window. GMP and rigl_elastic prune every layer alike
    (the output layer has 3–6× the Fisher per weight but is pruned at the same rate)."""
    for run in null_runs.values():
        assert retention(run.events, run.metrics, layer_sizes=LAYER_SIZES, keep_rejected=True).empty
    windows = pd.concat(
        [
            retention(run.events, run.metrics, layer_sizes=LAYER_SIZES, keep_rejected=True)
            for run in (gmp_run, elastic_run)
        ]
    )
    assert len(windows) == 2 * len(LAYER_SIZES)
    _assert_null(windows)
