"""The same seed gives the same event log, row for row (a single-replica run on the CPU).

Everything but the run's identity, the wall-clock time and the writer id must match: the
surgeries, their indices, densities, rewards and sensor readings.
"""

from __future__ import annotations

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
