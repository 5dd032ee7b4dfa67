"""Crash-safe Parquet writer of the event log (one writer per replica).

A writer buffers rows in Arrow and flushes a *part* when ``flush_rows`` rows are buffered or
``flush_seconds`` have passed since the last flush. Each part is written to a temporary name in
its final directory, closed, then renamed into place (:func:`esper.files.atomic_write`), so
readers (which only glob ``part-*.parquet``) never see a half-written file: after a SIGKILL
every part present is readable and only the unflushed buffer is lost. Parts land in
:func:`esper.events.paths.part_dir`, numbered after those already present.

Every row gets the writer's ``writer_id`` (unique per writer instance) and a ``seq`` number
(0, 1, 2, … per writer, no gaps), so a reader can detect lost rows. On :meth:`EventWriter.close`
the writer also leaves a small manifest (``_writer-<writer_id>.json``, row count) next to its
parts, so a lost *last* part is detectable too.

The writer holds no shared state and imports no Ray: a replica actor builds one from a
picklable :class:`EventWriterConfig`. One writer per (table, trial, replica) at a time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from esper.errors import EventLogWriteError
from esper.events.paths import next_part_number, part_dir
from esper.events.record import SurgicalEvent
from esper.events.schema import schema_for
from esper.events.writer_config import EventWriterConfig
from esper.files import atomic_write, atomic_write_text

__all__ = [
    "BOOKKEEPING_COLUMNS",
    "EventWriter",
    "EventWriterConfig",
    "SchemaMismatchError",
]

BOOKKEEPING_COLUMNS: tuple[str, ...] = ("writer_id", "seq")
"""Columns the writer fills in itself; callers must not supply them."""

_ROW_GROUP_ROWS = 1 << 17
_MIN_ROW_GROUP_ROWS = 16384


class SchemaMismatchError(ValueError):
    """Rows or a table given to the writer do not have the table's columns."""


class EventWriter:
    """Buffers rows of one table for one (trial, replica) and writes them as Parquet parts.

    Args:
        config: Where and when to write.

    Example:
        >>> with EventWriter(EventWriterConfig("runs/r1", "t0", 0)) as w:  # doctest: +SKIP
        ...     w.write([event])
    """

    def __init__(self, config: EventWriterConfig) -> None:
        self.config = config
        self.writer_id = uuid.uuid4().hex
        self.directory = part_dir(config.run_dir, config.table, config.trial_id, config.replica_id)
        self._schema = schema_for(config.table)
        self._data_schema = pa.schema(
            [f for f in self._schema if f.name not in BOOKKEEPING_COLUMNS],
            metadata=self._schema.metadata,
        )
        self._names: tuple[str, ...] = tuple(self._data_schema.names)
        # Dictionary-encode only strings: it is what makes them small, while on measurements
        # (mostly distinct floats) it costs 4x the write time for nothing.
        self._dictionary_columns = [f.name for f in self._schema if pa.types.is_string(f.type)]
        # Min/max statistics where readers filter (strings, integers); not on measurements.
        self._statistics_columns = [
            f.name
            for f in self._schema
            if pa.types.is_string(f.type) or pa.types.is_integer(f.type) or f.name == "wall_time"
        ]
        self._name_set = frozenset(self._names)
        self._chunks: list[pa.Table] = []  # converted data, in order
        self._chunk_rows = 0
        self._next_seq = 0
        self._next_part: int | None = None  # found lazily: construction stays cheap
        self._last_flush = time.monotonic()
        self._closed = False
        self.parts_written: list[Path] = []

    # -- public API ----------------------------------------------------------------------------

    @property
    def buffered_rows(self) -> int:
        """Rows accepted but not yet written to a part."""
        return self._chunk_rows

    @property
    def rows_written(self) -> int:
        """Rows written to parts so far (the next ``seq`` number)."""
        return self._next_seq

    def write(self, rows: Iterable[Mapping[str, Any] | SurgicalEvent]) -> None:
        """Buffer rows (mappings with exactly the table's columns, or :class:`SurgicalEvent`).

        Rows are converted to Arrow in chunks that fill the buffer up to ``flush_rows``, so
        memory stays bounded for long iterables. A row that does not fit raises before its
        chunk is buffered: rows of that chunk are dropped (none half-written), rows of earlier
        chunks of the same call are kept.

        Raises:
            SchemaMismatchError: a row lacks columns or has unknown ones (both are named), or a
                value does not fit its column's type (the column is named).
            RuntimeError: the writer is closed.
        """
        self._check_open()
        names, name_set = self._names, self._name_set
        columns: list[list[Any]] = [[] for _ in names]
        appenders = [c.append for c in columns]
        room = self.config.flush_rows - self._chunk_rows
        added = 0
        for index, row in enumerate(rows):
            if isinstance(row, SurgicalEvent):
                if self.config.table != "events":
                    raise SchemaMismatchError(
                        f"a SurgicalEvent is an 'events' row, not a {self.config.table!r} row"
                    )
                row = row.to_row()
            if row.keys() != name_set:
                self._raise_mismatch(set(row.keys()), f"row {index}")
            for append, name in zip(appenders, names, strict=True):
                append(row[name])
            added += 1
            if added >= room:
                self._append(self._to_arrow(columns))
                columns = [[] for _ in names]
                appenders = [c.append for c in columns]
                room = self.config.flush_rows - self._chunk_rows
                added = 0
        if added:
            self._append(self._to_arrow(columns))
        self._maybe_flush()

    def _to_arrow(self, columns: list[list[Any]]) -> pa.Table:
        try:
            arrays = [
                pa.array(values, type=f.type)
                for values, f in zip(columns, self._data_schema, strict=True)
            ]
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as err:
            bad = self._bad_column(columns)
            raise SchemaMismatchError(
                f"rows do not fit the {self.config.table!r} schema"
                f"{f' (column {bad})' if bad else ''}: {err}"
            ) from err
        return pa.Table.from_arrays(arrays, schema=self._data_schema)

    def _append(self, table: pa.Table) -> None:
        """Buffer ``table``, flushing a part each time ``flush_rows`` rows are buffered."""
        offset, n = 0, table.num_rows
        while offset < n:
            take = min(n - offset, self.config.flush_rows - self._chunk_rows)
            self._chunks.append(table if take == n else table.slice(offset, take))
            self._chunk_rows += take
            offset += take
            if self._chunk_rows >= self.config.flush_rows:
                self._flush()

    def _bad_column(self, columns: list[list[Any]]) -> str:
        for values, f in zip(columns, self._data_schema, strict=True):
            try:
                pa.array(values, type=f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                return f"{f.name!r}, type {f.type}"
        return ""

    def write_table(self, data: pa.Table | pa.RecordBatch) -> None:
        """Buffer an Arrow table or record batch (the fast path: no per-row Python).

        Columns may come in any order and with castable types (e.g. ``int64`` for ``int32``).
        A large table is split across parts of ``flush_rows`` rows.

        Raises:
            SchemaMismatchError: missing or unknown columns (named), or an impossible cast.
            RuntimeError: the writer is closed.
        """
        self._check_open()
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if not isinstance(data, pa.Table):
            raise TypeError(f"write_table takes a pyarrow Table or RecordBatch, got {type(data)}")
        if set(data.column_names) != self._name_set or len(data.column_names) != len(self._names):
            self._raise_mismatch(set(data.column_names), "table")
        if data.num_rows == 0:
            return
        table = data.select(list(self._names))
        if table.schema != self._data_schema:
            try:
                table = table.cast(self._data_schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
                raise SchemaMismatchError(
                    f"cannot cast table to the {self.config.table!r} schema: {err}"
                ) from err
        self._append(table)
        self._maybe_flush()

    def flush(self) -> Path | None:
        """Write every buffered row as one part now; returns its path (``None`` if empty)."""
        self._check_open()
        return self._flush()

    def mark(self) -> int:
        """Flush, then return the number the next part will get: the partition's first
        ``mark()`` parts hold every row written so far (what a checkpoint records, so that a
        restore can drop later parts with :func:`esper.events.paths.truncate_partition`)."""
        self.flush()
        if self._next_part is None:
            self._next_part = next_part_number(self.directory)
        return self._next_part

    def close(self) -> None:
        """Flush, then record the writer's row count; idempotent."""
        if self._closed:
            return
        try:
            self._flush()
            if self._next_seq > 0:
                try:
                    self._write_manifest()
                except OSError as err:
                    reason = err.strerror or err
                    raise EventLogWriteError(
                        f"could not write the manifest of {self.directory} ({reason}); its "
                        f"{self._next_seq} rows are in its parts, but readers will call the "
                        "writer unfinished"
                    ) from err
        finally:
            self._closed = True

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"EventWriter(table={c.table!r}, trial_id={c.trial_id!r}, replica_id={c.replica_id}, "
            f"writer_id={self.writer_id!r}, rows_written={self._next_seq}, "
            f"buffered={self.buffered_rows})"
        )

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _raise_mismatch(self, given: set[str], what: str) -> None:
        missing = [n for n in self._names if n not in given]
        unknown = sorted(given - self._name_set)
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if unknown:
            reserved = [u for u in unknown if u in BOOKKEEPING_COLUMNS]
            parts.append(f"unknown columns: {', '.join(unknown)}")
            if reserved:
                parts.append(f"({', '.join(reserved)} are assigned by the writer)")
        raise SchemaMismatchError(
            f"{what} does not match the {self.config.table!r} schema: {'; '.join(parts)}; "
            f"expected columns: {', '.join(self._names)}"
        )

    def _maybe_flush(self) -> None:
        if self.buffered_rows >= self.config.flush_rows or (
            self.buffered_rows and time.monotonic() - self._last_flush >= self.config.flush_seconds
        ):
            self._flush()

    def _flush(self) -> Path | None:
        n = self._chunk_rows
        self._last_flush = time.monotonic()
        if n == 0:
            return None
        data = pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        seq = pa.array(np.arange(self._next_seq, self._next_seq + n, dtype=np.int64))
        table = pa.Table.from_arrays(
            [*data.columns, pa.repeat(pa.scalar(self.writer_id, pa.string()), n), seq],
            schema=self._schema,
        )
        try:
            path = self._write_part(table)
        except OSError as err:  # the rows stay buffered: a later flush may still write them
            raise EventLogWriteError(
                f"could not write {n} {self.config.table} rows of trial "
                f"{self.config.trial_id} replica {self.config.replica_id} to {self.directory} "
                f"({err.strerror or err}); {self._next_seq} rows were written before, "
                f"these {n} were not"
            ) from err
        self._chunks = []
        self._chunk_rows = 0
        self._next_seq += n
        self.parts_written.append(path)
        return path

    def _write_part(self, table: pa.Table) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._next_part is None:
            self._next_part = next_part_number(self.directory)
        number = self._next_part
        final = self.directory / f"part-{number:06d}.parquet"
        while final.exists():  # a part appeared since the scan: never overwrite one
            number += 1
            final = self.directory / f"part-{number:06d}.parquet"
        row_group = max(_MIN_ROW_GROUP_ROWS, min(_ROW_GROUP_ROWS, table.num_rows))
        atomic_write(
            final,
            lambda tmp: pq.write_table(
                table,
                tmp,
                row_group_size=row_group,
                compression="snappy",
                use_dictionary=self._dictionary_columns,
                write_statistics=self._statistics_columns,
            ),
            fsync=self.config.durable,
        )
        self._next_part = number + 1
        return final

    def _write_manifest(self) -> None:
        payload = {
            "writer_id": self.writer_id,
            "table": self.config.table,
            "trial_id": self.config.trial_id,
            "replica_id": self.config.replica_id,
            "rows": self._next_seq,
            "parts": [p.name for p in self.parts_written],
            "closed_at": time.time(),
        }
        atomic_write_text(
            self.directory / f"_writer-{self.writer_id}.json",
            json.dumps(payload, indent=1),
            fsync=self.config.durable,
        )
