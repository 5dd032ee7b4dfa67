"""Is a run's event log whole? Writer manifests, sequence gaps and unreadable parts.

Every writer numbers its rows 0, 1, 2, … and, when it closes, records its row count in a
``_writer-<id>.json`` manifest beside its parts. A part deleted, a part truncated (its Parquet
footer unreadable), a writer that never closed or rows written twice show up here, so that a
reader can say what is missing instead of answering from part of the data.

These functions take what they check (a table's directory, its parts, a connection with a view
of the table); :meth:`esper.analysis.event_log.EventLog.gaps` and
:meth:`~esper.analysis.event_log.EventLog.damage` call them on a run's log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

__all__ = ["describe_damage", "manifests_of", "unreadable_parts", "writer_gaps"]


def manifests_of(table_dir: Path) -> dict[str, dict[str, Any]]:
    """The closed writers' manifests under a table's directory, by writer id (unreadable ones
    skipped)."""
    found: dict[str, dict[str, Any]] = {}
    for path in table_dir.glob("trial=*/replica=*/_writer-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "writer_id" in data and "rows" in data:
            found[str(data["writer_id"])] = data
    return found


def unreadable_parts(parts: Iterable[Path]) -> list[Path]:
    """The ``parts`` whose Parquet footer cannot be read (truncated, overwritten)."""
    bad = []
    for part in parts:
        try:
            pq.read_metadata(part)
        except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
            bad.append(part)
    return bad


def describe_damage(
    run_dir: Path, name: str, unreadable: Iterable[Path], gaps: pd.DataFrame
) -> list[str]:
    """The problems of table ``name``, one sentence each, naming the part or writer.

    Args:
        run_dir: The run directory (parts are named relative to it).
        name: The table.
        unreadable: Its parts that cannot be read (:func:`unreadable_parts`).
        gaps: Its :func:`writer_gaps`, computed on the readable parts.
    """
    problems = [
        f"{part.relative_to(run_dir)} cannot be read (truncated or not Parquet)"
        for part in unreadable
    ]
    for row in gaps.itertuples(index=False):
        at = f"{name} writer {row.writer_id} (trial {row.trial}, replica {row.replica})"
        if row.missing:
            ranges = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in row.missing_ranges)
            problems.append(f"{at} misses {row.missing} of {row.expected} rows (seq {ranges})")
        if row.duplicates:
            problems.append(f"{at} has {row.duplicates} duplicated rows")
    return problems


def writer_gaps(
    con: duckdb.DuckDBPyConnection, name: str, manifests: Mapping[str, Mapping[str, Any]]
) -> pd.DataFrame:
    """Per writer, the sequence numbers expected against those present: reveals loss.

    Each writer numbers its rows 0, 1, 2, … with no gaps. Rows are expected up to the
    highest ``seq`` present, or up to the row count the writer recorded on ``close()``
    (which also reveals a lost *last* part).

    Args:
        con: A DuckDB connection with a view named ``name`` over the table's readable parts.
        name: The table.
        manifests: The table's writer manifests (:func:`manifests_of`).

    Returns:
        One row per ``writer_id``: ``trial``, ``replica``, ``rows`` (present),
        ``first_seq``, ``last_seq``, ``expected`` (rows), ``missing`` (count),
        ``missing_ranges`` (list of inclusive ``(start, end)``), ``duplicates``, ``closed``
        (whether the writer recorded its count).
    """
    columns = [
        "writer_id",
        "trial",
        "replica",
        "rows",
        "first_seq",
        "last_seq",
        "expected",
        "missing",
        "missing_ranges",
        "duplicates",
        "closed",
    ]
    present = con.execute(
        f"""
        SELECT writer_id, any_value(trial) AS trial, any_value(replica) AS replica,
               count(*) AS rows, count(DISTINCT seq) AS distinct_rows,
               min(seq) AS first_seq, max(seq) AS last_seq
        FROM {name} GROUP BY writer_id ORDER BY trial, replica, writer_id
        """
    ).df()
    holes = con.execute(
        f"""
        SELECT writer_id, prev + 1 AS start, seq - 1 AS stop FROM (
            SELECT writer_id, seq, lag(seq, 1, -1) OVER (PARTITION BY writer_id ORDER BY seq)
                AS prev
            FROM (SELECT DISTINCT writer_id, seq FROM {name})
        ) WHERE seq - prev > 1 ORDER BY writer_id, start
        """
    ).df()
    ranges: dict[str, list[tuple[int, int]]] = {}
    for row in holes.itertuples(index=False):
        ranges.setdefault(str(row.writer_id), []).append((int(row.start), int(row.stop)))
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in present.itertuples(index=False):
        wid = str(row.writer_id)
        seen.add(wid)
        manifest = manifests.get(wid)
        last = int(row.last_seq)
        expected = max(last + 1, int(manifest["rows"]) if manifest else 0)
        missing = list(ranges.get(wid, []))
        if expected > last + 1:
            missing.append((last + 1, expected - 1))
        distinct = int(row.distinct_rows)
        records.append(
            {
                "writer_id": wid,
                "trial": row.trial,
                "replica": int(row.replica),
                "rows": int(row.rows),
                "first_seq": int(row.first_seq),
                "last_seq": last,
                "expected": expected,
                "missing": expected - distinct,
                "missing_ranges": missing,
                "duplicates": int(row.rows) - distinct,
                "closed": manifest is not None,
            }
        )
    for wid, manifest in manifests.items():  # writers whose every part is gone
        if wid in seen or int(manifest.get("rows", 0)) == 0:
            continue
        rows = int(manifest["rows"])
        records.append(
            {
                "writer_id": wid,
                "trial": str(manifest.get("trial_id", "")),
                "replica": int(manifest.get("replica_id", -1)),
                "rows": 0,
                "first_seq": -1,
                "last_seq": -1,
                "expected": rows,
                "missing": rows,
                "missing_ranges": [(0, rows - 1)],
                "duplicates": 0,
                "closed": True,
            }
        )
    return pd.DataFrame.from_records(records, columns=columns)
