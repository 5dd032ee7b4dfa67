"""``esper events RUN``: SQL over a run's event log from the command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from esper.analysis.events_cli import add_events_parser
from tests.events._event_log_data import write_run

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="esper")
    add_events_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["events", *argv])
    status: int = args.func(args)
    return status


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_run(run)
    return run


def test_default_query_prints_a_table(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "SELECT * FROM events LIMIT 20" in out and "20 rows" in out
    assert _run([str(run_dir), "--table", "metrics"]) == 0
    assert "10 rows" in capsys.readouterr().out


def test_csv_to_stdout_and_file(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    query = "SELECT trial, replica, count(*) AS n FROM events GROUP BY ALL ORDER BY ALL"
    assert _run([str(run_dir), "--sql", query, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["trial,replica,n", "t0,0,60"]
    target = tmp_path / "out" / "counts.csv"
    assert _run([str(run_dir), "--sql", query, "--format", "csv", "--out", str(target)]) == 0
    assert pd.read_csv(target)["n"].tolist() == [60, 60, 60, 60]
    assert [p.name for p in target.parent.iterdir()] == ["counts.csv"]  # no temporary left


def test_parquet_out(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "prunes.parquet"
    query = "SELECT layer, indices FROM events WHERE action = 'prune'"
    assert _run([str(run_dir), "--sql", query, "--format", "parquet", "--out", str(target)]) == 0
    table = pq.read_table(target)
    assert table.column_names == ["layer", "indices"] and table.num_rows == 120


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--sql", "SELEC nonsense"], "bad query"),
        (["--sql", "SELECT nope FROM events"], "bad query"),
        (["--format", "parquet"], "needs --out"),
    ],
)
def test_bad_input_exits_2(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    assert _run([str(run_dir), *argv]) == 2
    assert needle in capsys.readouterr().err
    assert list(tmp_path.glob("*.parquet")) == []


def test_missing_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x.csv"
    assert _run([str(tmp_path / "nope"), "--format", "csv", "--out", str(target)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not target.exists()


def test_esper_events_subprocess(run_dir: Path) -> None:
    query = "SELECT action, count(*) AS n FROM events GROUP BY ALL ORDER BY action"
    done = subprocess.run(
        [sys.executable, "-m", "esper", "events", str(run_dir), "--sql", query, "--format", "csv"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["action,n", "prune,120", "regrow,60", "sedate,60"]
    bad = subprocess.run(
        [sys.executable, "-m", "esper", "events", str(run_dir / "nope")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr
