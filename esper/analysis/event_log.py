"""Reading a run's event log: pyarrow, pandas and DuckDB views over its Parquet parts.

A run directory holds ``RUN/<table>/trial=T/replica=R/part-NNNNNN.parquet`` for the tables of
:mod:`esper.events.schema` (``events``, ``metrics``) and, per closed writer, a
``_writer-<id>.json`` manifest with its row count. Only ``part-*.parquet`` files are ever read:
the writer's temporary files (``.part-*.tmp``) are not. The run's metadata (``run.json``) is
read by :mod:`esper.analysis.runs`, whose :class:`~esper.analysis.runs.Run` opens this log.
``trial`` and ``replica`` are hive partition columns (string and int32) next to the data columns.
SQL runs on the sandboxed DuckDB connection of :mod:`esper.analysis.sandbox`; the integrity checks
(:meth:`EventLog.gaps`, :meth:`EventLog.damage`) are those of :mod:`esper.analysis.integrity`.

Example:
    >>> log = EventLog.open("runs/r1")  # doctest: +SKIP
    >>> log.table(filters={"layer": "layers.0.weight", "action": ["prune", "regrow"]})
    >>> log.sql("SELECT layer, action, count(*) FROM events GROUP BY ALL")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from esper.analysis.integrity import describe_damage, manifests_of, unreadable_parts, writer_gaps
from esper.analysis.sandbox import QueryError, one_select, sandboxed_connection, view_sql
from esper.events.paths import PART_GLOB
from esper.events.schema import TABLES, schema_for

__all__ = ["PARTITIONS", "EventLog", "Filters", "QueryError"]

PARTITIONS = pa.schema([pa.field("trial", pa.string()), pa.field("replica", pa.int32())])
"""Hive partition columns of every table, from the directory names."""

Filters = Mapping[str, Any]
"""``{column: value or list of values}``; values of one column are OR-ed, columns AND-ed."""

_PART_GLOB = f"trial=*/replica=*/{PART_GLOB}"


class EventLog:
    """The tables of one run directory.

    Build it with :meth:`open`.

    Attributes:
        run_dir: The run directory.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.excluded: set[Path] = set()
        """Parts left out of every read (unreadable ones, found by :meth:`damage`)."""
        self._con: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str]) -> EventLog:
        """Open a run directory.

        Raises:
            FileNotFoundError: ``run_dir`` is not a directory, or has neither an ``events/`` nor
                a ``metrics/`` table.
        """
        path = Path(run_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
        if not any((path / name).is_dir() for name in TABLES):
            raise FileNotFoundError(
                f"{str(path)!r} is not a run directory: it has no table directory "
                f"(expected one of: {', '.join(f'{t}/' for t in TABLES)})"
            )
        return cls(path)

    def __repr__(self) -> str:
        return f"EventLog({str(self.run_dir)!r})"

    # -- layout ----------------------------------------------------------------------------

    def tables(self) -> list[str]:
        """Names of the tables this run has a directory for."""
        return [name for name in TABLES if (self.run_dir / name).is_dir()]

    def parts(self, name: str = "events") -> list[Path]:
        """The complete Parquet parts of table ``name``, sorted (temporary files excluded)."""
        _check_table(name)
        return sorted(p for p in (self.run_dir / name).glob(_PART_GLOB) if p not in self.excluded)

    # -- pyarrow / pandas ------------------------------------------------------------------

    def dataset(self, name: str = "events") -> ds.Dataset:
        """A :mod:`pyarrow.dataset` over table ``name`` with ``trial``/``replica`` columns."""
        schema = self._full_schema(name)
        parts = self.parts(name)
        return ds.dataset(
            [str(p) for p in parts],
            schema=schema,
            format="parquet",
            partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
            partition_base_dir=str(self.run_dir / name),
        )

    def table(
        self,
        name: str = "events",
        filters: Filters | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Read table ``name`` as Arrow, pushing filters down to partitions and row groups.

        Args:
            name: ``events`` or ``metrics``.
            filters: ``{column: value or list}``; ``trial`` and ``replica`` prune directories,
                data columns (``layer``, ``action``, …) use Parquet statistics.
            columns: Columns to read (default: all, partition columns last).

        Raises:
            KeyError: an unknown table.
            ValueError: an unknown column in ``filters`` or ``columns`` (naming the valid ones).
        """
        schema = self._full_schema(name)
        if columns is not None:
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise ValueError(
                    f"unknown column(s) {', '.join(map(repr, unknown))} of table {name!r}; "
                    f"valid columns: {', '.join(schema.names)}"
                )
        expression = _filter_expression(schema, filters, name)
        dataset = self.dataset(name)
        return dataset.to_table(
            columns=list(columns) if columns is not None else None, filter=expression
        )

    def to_pandas(
        self,
        name: str = "events",
        filters: Filters | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """:meth:`table` as a pandas DataFrame."""
        return self.table(name, filters=filters, columns=columns).to_pandas()

    # -- DuckDB ----------------------------------------------------------------------------

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """A sandboxed DuckDB connection with one view per table (``events``, ``metrics``).

        The views read ``part-*.parquet`` with hive partitioning at query time, so parts
        written after the call are seen by later queries. A table without parts is an empty
        view with the right columns. A run directory may come from someone else, so the
        connection can read this run's files and nothing else: external access is off except
        for the run directory (``allowed_directories``), extensions are neither installed nor
        auto-loaded, and the configuration is locked before any query.
        """
        if self._con is None:
            self._con = sandboxed_connection(self.run_dir)
        for name in TABLES:  # cheap; a table that got its first part since is then seen
            self._con.execute(self._view_sql(name))
        return self._con

    def sql(self, query: str) -> pd.DataFrame:
        """Run one ``SELECT`` query on :meth:`duckdb` and return a pandas DataFrame.

        Raises:
            QueryError: not exactly one ``SELECT`` statement (``COPY``, ``ATTACH``, ``SET``,
                ``INSTALL``, several statements, ... are refused before anything runs).
            duckdb.Error: the query is invalid or reads outside the run (DuckDB's message
                names the problem).
        """
        return self.duckdb().execute(one_select(query)).df()

    def sql_arrow(self, query: str) -> pa.Table:
        """:meth:`sql` as an Arrow table."""
        relation = self.duckdb().sql(one_select(query))
        return relation.to_arrow_table() if relation is not None else pa.table({})

    def close(self) -> None:
        """Close the DuckDB connection, if one was opened."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- integrity -------------------------------------------------------------------------

    def gaps(self, name: str = "events") -> pd.DataFrame:
        """Per writer, the sequence numbers expected against those present: reveals loss
        (:func:`esper.analysis.integrity.writer_gaps` on the readable parts)."""
        con = self.duckdb()
        return writer_gaps(con, name, manifests_of(self.run_dir / name))

    def damage(self) -> list[str]:
        """What is wrong with this log, one sentence each, naming the part or writer (``[]``:
        intact; :func:`esper.analysis.integrity.describe_damage`).

        Unreadable parts are added to :attr:`excluded` first, so the gap check (and every
        later read) runs on the readable ones; the rows they held then show as missing.
        """
        problems: list[str] = []
        for name in self.tables():
            unreadable = unreadable_parts(self.parts(name))
            self.excluded.update(unreadable)
            problems += describe_damage(self.run_dir, name, unreadable, self.gaps(name))
        return problems

    # -- internals -------------------------------------------------------------------------

    def _full_schema(self, name: str) -> pa.Schema:
        schema = _check_table(name)
        return pa.schema(list(schema) + list(PARTITIONS), metadata=schema.metadata)

    def _view_sql(self, name: str) -> str:
        # with parts left out, the readable ones are named one by one instead of globbed
        glob = None if self.excluded else self.run_dir.resolve() / name / _PART_GLOB
        return view_sql(name, self._full_schema(name), self.parts(name), glob)


def _check_table(name: str) -> pa.Schema:
    try:
        return schema_for(name)
    except KeyError:
        raise KeyError(f"unknown table {name!r}; valid tables: {', '.join(TABLES)}") from None


def _filter_expression(
    schema: pa.Schema, filters: Filters | None, name: str
) -> ds.Expression | None:
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise ValueError(f"filters must be a mapping {{column: value or list}}, got {filters!r}")
    expression: ds.Expression | None = None
    for column, wanted in filters.items():
        if column not in schema.names or pa.types.is_list(schema.field(column).type):
            valid = [f.name for f in schema if not pa.types.is_list(f.type)]
            raise ValueError(
                f"cannot filter table {name!r} on {column!r}; valid filter columns: "
                f"{', '.join(valid)}"
            )
        values = list(wanted) if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
        if not values:
            raise ValueError(f"filter on {column!r} has an empty list of values")
        field_type = schema.field(column).type
        try:
            array = pa.array(values, type=field_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as err:
            raise ValueError(
                f"filter values {values!r} for {column!r} do not fit its type {field_type}"
            ) from err
        field = ds.field(column)
        term = field == array[0] if len(array) == 1 else field.isin(array)
        expression = term if expression is None else expression & term
    return expression
