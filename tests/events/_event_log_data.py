"""Small event logs for the event-log tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from esper.events.record import SurgicalEvent
from esper.events.schema import METRIC_FIELDS
from esper.events.writer import EventWriter, EventWriterConfig

__all__ = ["ACTIONS_CYCLE", "LAYERS", "make_event", "metric_row", "parts_of", "write_run"]

LAYERS = ("layers.0.weight", "layers.1.weight", "layers.2.weight")
ACTIONS_CYCLE = ("prune", "regrow", "prune", "sedate")


def make_event(i: int, trial: str = "t0", replica: int = 0) -> SurgicalEvent:
    return SurgicalEvent(
        run_id="r",
        trial_id=trial,
        replica_id=replica,
        drift="permute",
        task_index=i // 100,
        sgd_step=10 * i,
        surgery_step=i,
        layer=LAYERS[i % len(LAYERS)],
        action=ACTIONS_CYCLE[i % len(ACTIONS_CYCLE)],
        count=i % 17,
        indices=list(range(i % 5)),
        density_after=0.1,
    )


def metric_row(i: int) -> dict[str, Any]:
    row: dict[str, Any] = {name: float(i) for name in METRIC_FIELDS}
    row.update(run_id="r", trial_id="t0", replica_id=0, policy="rigl", drift="permute")
    row.update(task_index=0, sgd_step=i, surgery_step=i, active_params=100 + i)
    row.update(policy_version=i, node_id="node-a")
    return row


def parts_of(run: Path, trial: str = "t0", replica: int = 0, table: str = "events") -> list[Path]:
    return sorted((run / table / f"trial={trial}" / f"replica={replica}").glob("part-*.parquet"))


def write_run(run: Path) -> None:
    """Two trials × two replicas, 60 events each, plus a metrics table and ``run.json``."""
    for trial in ("t0", "t1"):
        for replica in (0, 1):
            config = EventWriterConfig(str(run), trial, replica, flush_rows=25)
            with EventWriter(config) as writer:
                writer.write(make_event(i, trial, replica) for i in range(60))
    with EventWriter(EventWriterConfig(str(run), "t0", 0, table="metrics")) as writer:
        writer.write(metric_row(i) for i in range(10))
    (run / "run.json").write_text(json.dumps({"run_id": "r", "command": "test"}))
