"""The event log's query interface is a sandbox: one SELECT over the run's own files.

A run directory may come from someone else; a query typed (or pasted) into ``esper events
--sql`` or ``EventLog.sql`` must not write files, attach databases, read outside the run,
install extensions or change the sandbox's settings. Each case checks that nothing was written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import pytest

from esper.analysis.event_log import EventLog, QueryError
from esper.analysis.events_cli import add_events_parser
from tests.events._event_log_data import write_run


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_run(run)
    (tmp_path / "secret.txt").write_text("outside the run\n")
    return run


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        ("COPY events TO '{out}/x.csv'", "not COPY"),
        ("COPY events TO '{run}/x.csv'", "not COPY"),  # even inside the run directory
        ("ATTACH '{out}/x.duckdb' AS x", "not ATTACH"),
        ("INSTALL httpfs", "not "),
        ("SET enable_external_access = true", "not SET"),
        ("CREATE TABLE t AS SELECT 1", "not CREATE"),
        ("SELECT 1; COPY events TO '{out}/y.csv'", "one statement per query, got 2"),
    ],
)
def test_statements_other_than_one_select_are_refused_before_running(
    run_dir: Path, query: str, refusal: str
) -> None:
    out = run_dir.parent
    before = _files(out)
    with EventLog.open(run_dir) as log, pytest.raises(QueryError, match=refusal):
        log.sql(query.format(out=out, run=run_dir))
    assert _files(out) == before


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_text('{out}/secret.txt')",
        "SELECT * FROM read_csv('/etc/hostname')",
        "SELECT * FROM read_parquet('{out}/*.parquet')",
    ],
)
def test_a_select_cannot_read_outside_the_run(run_dir: Path, query: str) -> None:
    with EventLog.open(run_dir) as log, pytest.raises(duckdb.Error, match="disabled"):
        log.sql(query.format(out=run_dir.parent))


def test_the_sandbox_still_answers_queries_on_the_run(run_dir: Path) -> None:
    with EventLog.open(run_dir) as log:
        assert int(log.sql("SELECT count(*) AS n FROM events")["n"][0]) == 240
        joined = log.sql("WITH m AS (SELECT * FROM metrics) SELECT count(*) AS n FROM m")
        assert int(joined["n"][0]) == 10
        with pytest.raises(duckdb.Error, match="locked"):  # the lock holds on the raw handle
            log.duckdb().execute("SET enable_external_access = true")


def test_the_cli_refuses_with_exit_2_and_writes_nothing(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="esper")
    add_events_parser(parser.add_subparsers(dest="command", required=True))
    before = _files(run_dir.parent)
    query = f"COPY events TO '{run_dir.parent}/leak.csv'"
    args = parser.parse_args(["events", str(run_dir), "--sql", query])
    assert args.func(args) == 2
    assert "refused query" in capsys.readouterr().err
    args = parser.parse_args(
        ["events", str(run_dir), "--sql", "SELECT * FROM read_text('/etc/hostname')"]
    )
    assert args.func(args) == 2
    assert "bad query" in capsys.readouterr().err
    assert _files(run_dir.parent) == before
