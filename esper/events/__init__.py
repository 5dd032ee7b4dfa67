"""The surgical event log's contract, torch-free: the record, its versioned Arrow schemas and
the crash-safe Parquet writer.

Workloads build :class:`SurgicalEvent` records, platform actors write them with
:class:`EventWriter`, and :mod:`esper.analysis` reads them back; all three import this package,
which imports neither torch nor Hydra.
"""

from esper.events.paths import PART_GLOB, next_part_number, part_dir
from esper.events.record import ACTIONS, EVENT_FIELDS, Action, SurgicalEvent
from esper.events.schema import EVENTS, METRIC_FIELDS, METRICS, SCHEMA_VERSION, TABLES, schema_for
from esper.events.writer import (
    BOOKKEEPING_COLUMNS,
    EventWriter,
    EventWriterConfig,
    SchemaMismatchError,
)

__all__ = [
    "ACTIONS",
    "BOOKKEEPING_COLUMNS",
    "EVENTS",
    "EVENT_FIELDS",
    "METRICS",
    "METRIC_FIELDS",
    "PART_GLOB",
    "SCHEMA_VERSION",
    "TABLES",
    "Action",
    "EventWriter",
    "EventWriterConfig",
    "SchemaMismatchError",
    "SurgicalEvent",
    "next_part_number",
    "part_dir",
    "schema_for",
]
