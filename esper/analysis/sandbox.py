"""DuckDB over one run directory, sandboxed: it reads this run's files and nothing else.

A run directory may come from someone else, and a query typed into ``esper events --sql`` or
:meth:`~esper.analysis.event_log.EventLog.sql` may have been pasted from anywhere. So the
connection is locked down before any query runs (external access off except for the run
directory, extensions neither installed nor auto-loaded, configuration locked), and a query is
let through only if it is exactly one ``SELECT`` (or ``EXPLAIN``) statement: ``COPY``,
``ATTACH``, ``SET``, ``INSTALL`` or several statements are refused before anything runs.

Each table is a view over its ``part-*.parquet`` files with hive partitioning, read at query
time, so parts written after the view was made are seen by later queries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

__all__ = ["QueryError", "one_select", "sandboxed_connection", "view_sql"]

_DUCKDB_HIVE_TYPES = "{'trial': VARCHAR, 'replica': INTEGER}"
_READING = ("SELECT", "EXPLAIN")


class QueryError(ValueError):
    """A query the event log's sandbox refuses to run (it is not one ``SELECT``)."""


def sandboxed_connection(run_dir: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that may read files under ``run_dir`` and nowhere else.

    External access is off except for ``run_dir`` (``allowed_directories``), extensions are
    neither installed nor auto-loaded, and the configuration is locked, so no query can undo it.
    """
    con = duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    root = _sql_string(str(run_dir.resolve()) + os.sep)
    con.execute(f"SET allowed_directories = [{root}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def view_sql(name: str, schema: pa.Schema, parts: Sequence[Path], glob: Path | None) -> str:
    """The statement that (re)creates view ``name`` over a table's Parquet parts.

    Args:
        name: The table, and the view's name.
        schema: The table's columns, partition columns included (for the empty view).
        parts: The table's readable parts; none gives an empty view with ``schema``'s columns.
        glob: The pattern of the table's parts, read at query time; ``None`` names ``parts``
            one by one instead (when some parts are left out).
    """
    if not parts:
        cols = ", ".join(f'CAST(NULL AS {_duck_type(f.type)}) AS "{f.name}"' for f in schema)
        return f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} WHERE false"
    if glob is not None:
        source = _sql_string(str(glob))
    else:
        source = "[" + ", ".join(_sql_string(str(p.resolve())) for p in parts) + "]"
    return (
        f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({source}, "
        f"hive_partitioning = true, hive_types = {_DUCKDB_HIVE_TYPES}, union_by_name = true)"
    )


def one_select(query: str) -> str:
    """``query`` if it is exactly one ``SELECT`` (or ``EXPLAIN``) statement.

    Raises:
        QueryError: naming what was found instead.
        duckdb.Error: the query does not parse.
    """
    statements = duckdb.extract_statements(query)
    if len(statements) != 1:
        raise QueryError(f"one statement per query, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in _READING:
        raise QueryError(f"only SELECT queries are run on an event log, not {kind}")
    return query


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t):
        return "VARCHAR"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_list(t):
        return "UINTEGER[]"
    raise TypeError(f"no DuckDB type for {t}")
