"""The event-log contract: versioned Arrow schemas of the tables a run writes.

``events``: one row per (surgery, layer, action), the fields of
:class:`esper.events.record.SurgicalEvent` plus the writer's bookkeeping (``writer_id`` and a
per-writer ``seq`` number that starts at 0 and has no gaps, so any lost row is detectable).
``metrics``: one row per surgery step of a replica (online accuracy and loss, density, active
parameters, ground-truth novelty, reward and its components, the policy version that acted and
the Ray node the replica ran on), the time series behind accuracy
curves, breathing and recovery analyses.

Files live at ``RUN/<table>/trial=T/replica=R/part-NNNNNN.parquet`` (hive partitions), so
``trial`` and ``replica`` are also partition columns when read as a dataset.
"""

from __future__ import annotations

import pyarrow as pa

from esper.events.record import EVENT_FIELDS

__all__ = [
    "EVENTS",
    "METRICS",
    "METRIC_FIELDS",
    "SCHEMA_VERSION",
    "TABLES",
    "schema_for",
]

SCHEMA_VERSION = 4
"""Bumped whenever a column is added, removed, renamed or changes type (2: ``events.detail``,
``metrics.policy_version`` and ``metrics.node_id``; 3: ``events.policy_tau`` and
``events.heat``; 4: ``events.flipflop_rate`` renamed ``flip_rate``, the measure it holds).
Readers read older logs too: a column a file lacks reads as null (a schema-3 log's flip rate
stays in its files under the old name)."""

_F64 = pa.float64()
_EVENT_TYPES: dict[str, pa.DataType] = {
    "run_id": pa.string(),
    "trial_id": pa.string(),
    "replica_id": pa.int32(),
    "drift": pa.string(),
    "task_index": pa.int32(),
    "sgd_step": pa.int64(),
    "surgery_step": pa.int64(),
    "layer": pa.string(),
    "action": pa.string(),
    "count": pa.int64(),
    "indices": pa.list_(pa.uint32()),
    "policy_version": pa.int64(),
    "wall_time": _F64,
    "detail": pa.string(),
    "heat": pa.bool_(),
}
_BOOKKEEPING = [pa.field("writer_id", pa.string()), pa.field("seq", pa.int64())]


def _metadata(table: str) -> dict[bytes, bytes]:
    return {b"esper.table": table.encode(), b"esper.schema_version": str(SCHEMA_VERSION).encode()}


EVENTS = pa.schema(
    [pa.field(name, _EVENT_TYPES.get(name, _F64)) for name in EVENT_FIELDS] + _BOOKKEEPING,
    metadata=_metadata("events"),
)
"""Schema of the ``events`` table (float64 for every measurement not listed above)."""

METRIC_FIELDS: tuple[str, ...] = (
    "run_id",
    "trial_id",
    "replica_id",
    "policy",
    "drift",
    "task_index",
    "sgd_step",
    "surgery_step",
    "online_accuracy",
    "online_loss",
    "density",
    "active_params",
    "novelty",
    "reward",
    "r_accuracy",
    "r_flops",
    "r_oscillation",
    "r_gsnr",
    "r_spike",
    "policy_version",
    "node_id",
    "wall_time",
)
_METRIC_TYPES: dict[str, pa.DataType] = {
    **{k: v for k, v in _EVENT_TYPES.items() if k in METRIC_FIELDS},
    "policy": pa.string(),
    "active_params": pa.int64(),
    "node_id": pa.string(),
}
METRICS = pa.schema(
    [pa.field(name, _METRIC_TYPES.get(name, _F64)) for name in METRIC_FIELDS] + _BOOKKEEPING,
    metadata=_metadata("metrics"),
)
"""Schema of the ``metrics`` table (novelty is ground truth, for analysis only)."""

TABLES: dict[str, pa.Schema] = {"events": EVENTS, "metrics": METRICS}


def schema_for(table: str) -> pa.Schema:
    """The schema of ``table`` (``events`` or ``metrics``).

    Raises:
        KeyError: an unknown table, naming the valid ones.
    """
    if table not in TABLES:
        raise KeyError(f"unknown table {table!r}; valid tables: {', '.join(TABLES)}")
    return TABLES[table]
