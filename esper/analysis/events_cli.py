"""``esper events RUN``: query a run's event log with SQL (DuckDB).

``esper events RUN --sql "SELECT layer, action, count(*) FROM events GROUP BY ALL"`` prints a
table; ``--format csv`` writes CSV (to ``--out`` or stdout), ``--format parquet`` writes Parquet
to ``--out``. Views: ``events`` and ``metrics``, with hive columns ``trial`` and ``replica``.
A missing run, a bad query or a bad output path exits with status 2 and a message; ``--out`` is
written atomically (:func:`esper.files.atomic_write`), so no half file is ever left.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from esper.files import add_force_flag, atomic_write

__all__ = ["FORMATS", "add_events_parser", "events_command"]

FORMATS = ("table", "csv", "parquet")
"""Output formats of ``esper events``."""

_TABLE_ROWS = 1000  # rows printed by --format table; more are summarised


def add_events_parser(subparsers: Any) -> None:
    """Register ``esper events`` on ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from esper.events.schema import TABLES

    parser = subparsers.add_parser(
        "events",
        help="query a run's surgical event log with SQL (DuckDB views: events, metrics)",
        description=(
            "Run a DuckDB query over a run directory's Parquet tables. Views: events, metrics "
            "(with hive columns trial and replica)."
        ),
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run directory")
    parser.add_argument(
        "--sql",
        default=None,
        metavar="QUERY",
        help="SQL query (default: SELECT * FROM <table> LIMIT 20)",
    )
    parser.add_argument(
        "--table",
        choices=tuple(TABLES),
        default="events",
        help="table of the default query (default: events)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="table", dest="fmt", help="output format"
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="write the result here"
    )
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="query a run whose log misses parts (a warning names what is missing)",
    )
    add_force_flag(parser)
    parser.set_defaults(func=events_command)


def events_command(args: argparse.Namespace) -> int:
    """Handler of ``esper events``; returns the exit status (2 on bad input)."""
    import duckdb

    from esper.analysis.runs import RunError, load_run
    from esper.analysis.sandbox import QueryError

    if args.fmt == "parquet" and args.out is None:
        return _fail("--format parquet needs --out PATH (Parquet is not written to a terminal)")
    if args.fmt == "table" and args.out is not None:
        return _fail("--out needs --format csv or parquet (table output goes to the terminal)")
    query = args.sql if args.sql is not None else f"SELECT * FROM {args.table} LIMIT 20"
    if not query.strip():
        return _fail("--sql is empty")
    try:
        run = load_run(args.run)
    except RunError as err:
        return _fail(str(err))
    problems = run.damage()
    if problems and not args.allow_incomplete:
        return _fail(f"run {args.run} is damaged: {'; '.join(problems)}; pass "
                     "--allow-incomplete to query what is there")  # fmt: skip
    for problem in problems:
        print(f"esper events: warning: {problem}", file=sys.stderr)
    log = run.open_log()
    try:
        try:
            result = log.sql_arrow(query)
        except QueryError as err:
            return _fail(f"refused query {query!r}: {err}")
        except duckdb.Error as err:
            return _fail(f"bad query {query!r}: {err}")
        if args.fmt == "table":
            _print_table(result, query)
        elif args.fmt == "csv":
            _write_csv(result, args.out)
        else:
            _write_parquet(result, args.out)
    except OSError as err:
        return _fail(f"cannot write {args.out}: {err}")
    finally:
        log.close()
    return 0


def _fail(message: str) -> int:
    print(f"esper events: {message}", file=sys.stderr)
    return 2


def _print_table(result: Any, query: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=query if len(query) <= 80 else query[:77] + "…")
    for name in result.column_names:
        table.add_column(name, overflow="fold")
    shown = result.slice(0, _TABLE_ROWS).to_pylist()
    for row in shown:
        table.add_row(*(_cell(v) for v in row.values()))
    console = Console()
    console.print(table)
    if result.num_rows > _TABLE_ROWS:
        console.print(
            f"[dim]{result.num_rows} rows, first {_TABLE_ROWS} shown; "
            f"use --format csv for all[/dim]"
        )
    else:
        console.print(f"[dim]{result.num_rows} rows[/dim]")


def _cell(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and len(value) > 8:
        return f"[{', '.join(map(str, value[:8]))}, … ({len(value)})]"
    return str(value)


def _write_csv(result: Any, out: Path | None) -> None:
    frame = result.to_pandas()
    if out is None:
        frame.to_csv(sys.stdout, index=False)
        return
    atomic_write(out.expanduser(), lambda tmp: frame.to_csv(tmp, index=False))


def _write_parquet(result: Any, out: Path) -> None:
    import pyarrow.parquet as pq

    atomic_write(out.expanduser(), lambda tmp: pq.write_table(result, tmp))
