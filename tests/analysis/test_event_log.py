"""The event-log reader: filters, DuckDB views, empty tables, benchmark rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.analysis import EventLog
from esper.events.record import ACTIONS
from esper.events.writer import EventWriter, EventWriterConfig
from tests.events._event_log_data import LAYERS, make_event, metric_row, write_run


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EventLog.open(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="events/, metrics/"):
        EventLog.open(tmp_path)


def test_filters_push_down(tmp_path: Path) -> None:
    write_run(tmp_path)
    log = EventLog.open(tmp_path)
    every = log.to_pandas()
    assert len(every) == 240 and {"trial", "replica"} <= set(every.columns)
    filters = {"layer": LAYERS[0], "action": ["prune", "regrow"], "trial": "t0"}
    got = log.to_pandas(filters=filters, columns=["layer", "action", "trial", "seq"])
    want = every[
        (every.layer == LAYERS[0]) & every.action.isin(["prune", "regrow"]) & (every.trial == "t0")
    ]
    assert len(got) == len(want) > 0
    assert list(got.columns) == ["layer", "action", "trial", "seq"]
    assert log.table(filters={"replica": 1, "trial": ["t1"]}).num_rows == 60
    # Partition pruning: a corrupt part in trial t1 is never opened when filtering on t0.
    bad = tmp_path / "events" / "trial=t1" / "replica=0" / "part-000999.parquet"
    bad.write_bytes(b"corrupt")
    assert log.table(filters={"trial": "t0"}).num_rows == 120
    with pytest.raises(ValueError, match="valid filter columns"):
        log.table(filters={"colour": "red"})
    with pytest.raises(ValueError, match="unknown column"):
        log.table(columns=["colour"])
    with pytest.raises(KeyError, match="valid tables"):
        log.table("nope")


def test_duckdb_views_and_sql_with_hive_columns(tmp_path: Path) -> None:
    write_run(tmp_path)
    log = EventLog.open(tmp_path)
    frame = log.sql(
        "SELECT trial, replica, count(*) AS n FROM events GROUP BY ALL ORDER BY trial, replica"
    )
    assert frame.to_dict("list") == {
        "trial": ["t0", "t0", "t1", "t1"],
        "replica": [0, 1, 0, 1],
        "n": [60, 60, 60, 60],
    }
    con = log.duckdb()
    assert con.execute("SELECT count(*) FROM metrics WHERE trial = 't0'").fetchone() == (10,)
    assert con.execute(
        "SELECT count(*) FROM events WHERE replica = 1 AND action = 'prune'"
    ).fetchone() == (60,)
    assert log.tables() == ["events", "metrics"]


def test_empty_table_is_an_empty_view(tmp_path: Path) -> None:
    with EventWriter(EventWriterConfig(str(tmp_path), "t0", 0, table="metrics")) as writer:
        writer.write([metric_row(0)])
    log = EventLog.open(tmp_path)
    assert log.table().num_rows == 0
    assert len(log.sql("SELECT * FROM events")) == 0
    assert len(log.gaps()) == 0
    # A part written after the connection was made is seen by the next query.
    with EventWriter(EventWriterConfig(str(tmp_path), "t0", 0)) as writer:
        writer.write([make_event(0)])
    assert len(log.sql("SELECT * FROM events")) == 1


def test_benchmarks_register_and_their_rows_fit_the_writer(tmp_path: Path) -> None:
    from esper.bench.harness import PERF
    from esper.bench.perf_events import synthetic_events

    assert {"event_write_rows_per_s", "event_write_vs_mlflow", "event_query_10m_s"} <= set(PERF)
    data = synthetic_events(5000)
    with EventWriter(EventWriterConfig(str(tmp_path), "t0", 0, flush_rows=2048)) as writer:
        writer.write_table(data)
    log = EventLog.open(tmp_path)
    assert len(log.parts()) == 3 and log.table().num_rows == 5000
    counts = log.sql("SELECT action, count(*) AS n FROM events GROUP BY ALL")
    assert set(counts["action"]) <= set(ACTIONS) and counts["n"].sum() == 5000
