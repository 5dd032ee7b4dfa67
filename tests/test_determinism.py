"""The same seed gives the same event log, row for row (a single-replica run on the CPU).

Everything but the run's identity, the wall-clock time and the writer id must match: the
surgeries, their indices, densities, rewards and sensor readings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from esper.analysis.runs import load_run
from esper.cli import main

_VARYING = ("run_id", "wall_time", "writer_id")
_RUN = [
    "workload.num_tasks=2",
    "policy.surgery_interval=10",
    "workload.schedule.params.task_length=40",
    "experiment.seed=7",
]


def _events(storage: Path, policy: list[str]) -> pd.DataFrame:
    assert main(["evaluate", *_RUN, *policy, f"cluster.storage_path={storage}"]) == 0
    (run,) = storage.iterdir()
    events = load_run(run).events.drop(columns=list(_VARYING))
    return events.sort_values(["surgery_step", "layer", "action", "seq"]).reset_index(drop=True)


@pytest.mark.parametrize(
    "policy", [["policy=rigl", "policy.params.delta_t=10"], ["policy=emrakul"]]
)
def test_the_same_seed_gives_the_same_event_log(tmp_path: Path, policy: list[str]) -> None:
    first = _events(tmp_path / "a", policy)
    second = _events(tmp_path / "b", policy)
    assert len(first) > 0 and set(first["action"]) >= {"prune", "regrow"}
    pd.testing.assert_frame_equal(first, second)


def _sweep_tables(storage: Path) -> dict[str, pd.DataFrame]:
    """A synchronous PBT sweep of two members; its tables with trial ids replaced by the
    member's index (Tune names trials ``<random>_<index>``)."""
    from tests.platform.conftest import TINY

    args = [*TINY, "search=pbt", "search.num_samples=2", "search.perturbation_interval=2",
            "search.quantile_fraction=0.5", "search.seed=3", "policy.training.iterations=4",
            "policy.training.replicas=1", "cluster.num_cpus=2", "cluster.replica_cpus=0.25",
            "cluster.learner_cpus=0.25", "experiment.seed=7",
            f"cluster.storage_path={storage}"]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "esper", "sweep", *args],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = [p for p in storage.iterdir() if p.is_dir() and p.name != "mlartifacts"]
    loaded = load_run(run)
    tables = {}
    for name, table in (("events", loaded.events), ("metrics", loaded.metrics)):
        table = table.drop(columns=[c for c in (*_VARYING, "node_id") if c in table])
        trials = {t: t.rsplit("_", 1)[-1] for t in table["trial_id"].unique()}
        for column in ("trial_id", "trial"):  # the row's own, and the partition's
            if column in table:
                table[column] = table[column].astype(str).map(trials)
        if "detail" in table:
            for old, new in trials.items():
                table["detail"] = table["detail"].str.replace(old, new, regex=False)
        keys = [c for c in ("trial_id", "replica_id", "surgery_step", "layer", "action", "seq")
                if c in table]  # fmt: skip
        tables[name] = table.sort_values(keys).reset_index(drop=True)
    return tables


@pytest.mark.slow
def test_a_synchronous_population_sweep_is_reproducible_by_seed(tmp_path: Path) -> None:
    first, second = _sweep_tables(tmp_path / "a"), _sweep_tables(tmp_path / "b")
    assert set(first["events"]["action"]) >= {"prune", "regrow", "exploit"}
    for name in ("events", "metrics"):
        pd.testing.assert_frame_equal(first[name], second[name])
