"""Event-log reader, strategy detectors, comparisons and reports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from esper.analysis.event_log import EventLog

__all__ = ["EventLog"]


def __getattr__(name: str) -> Any:
    # Lazy: the writer (esper.platform.event_log) imports esper.analysis.schema, and a replica
    # should not pay for importing DuckDB and pandas to write Parquet.
    if name == "EventLog":
        from esper.analysis.event_log import EventLog

        return EventLog
    raise AttributeError(f"module 'esper.analysis' has no attribute {name!r}")
