"""Damaged event logs are detected and said: a deleted part, a truncated part, and every reader
(``events``, ``strategies``, ``compare``) refusing them by name unless ``--allow-incomplete``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from esper.analysis.compare_cli import add_compare_parser
from esper.analysis.events_cli import add_events_parser
from esper.analysis.runs import load_run
from esper.analysis.strategies_cli import add_strategies_parser
from tests.events._event_log_data import write_run


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    write_run(run)  # 2 trials × 2 replicas × 60 events, in parts of 25 rows
    return run


def _part(run: Path, index: int = 1) -> Path:
    return sorted((run / "events" / "trial=t0" / "replica=0").glob("part-*.parquet"))[index]


def _main(add: object, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="esper")
    add(parser.add_subparsers(dest="command", required=True))  # type: ignore[operator]
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_an_intact_log_has_no_damage(run_dir: Path) -> None:
    assert load_run(run_dir).damage() == []


def test_a_deleted_part_is_named_with_its_missing_rows(run_dir: Path) -> None:
    _part(run_dir).unlink()
    problems = load_run(run_dir).damage()
    assert len(problems) == 1
    assert "trial t0, replica 0) misses 25 of 60 rows (seq 25-49)" in problems[0]


def test_a_truncated_part_is_named_left_out_and_its_rows_missing(run_dir: Path) -> None:
    part = _part(run_dir)
    part.write_bytes(part.read_bytes()[:100])
    run = load_run(run_dir)
    problems = run.damage()
    assert any("cannot be read" in p and part.name in p for p in problems)
    assert any("misses 25 of 60 rows" in p for p in problems)
    assert len(run.events) == 240 - 25  # the readable rest is still there


@pytest.mark.parametrize(
    ("add", "argv"),
    [
        (add_events_parser, ["events", "{run}", "--sql", "SELECT count(*) FROM events"]),
        (add_strategies_parser, ["strategies", "{run}"]),
        (add_compare_parser, ["compare", "{run}"]),
    ],
)
def test_every_reader_refuses_a_damaged_log_unless_allowed(
    run_dir: Path, add: object, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    part = _part(run_dir)
    part.write_bytes(part.read_bytes()[:100])
    args = [a.format(run=run_dir) for a in argv]
    assert _main(add, args) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and "--allow-incomplete" in err
    status = _main(add, [*args, "--allow-incomplete"])
    assert status in (0, 2)  # the toy run may have too little for a comparison ...
    out = capsys.readouterr()
    assert "warning" in out.out + out.err  # ... but what is missing is always said
    if argv[0] != "compare":
        assert status == 0


def test_a_notebook_reading_a_damaged_or_unfinished_run_is_warned_once(tmp_path: Path) -> None:
    import json
    import warnings

    from esper.analysis import IncompleteRunWarning, load_run
    from tests.events._event_log_data import parts_of, write_run

    run = tmp_path / "run"
    write_run(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole, finished run reads silently
        assert len(load_run(run).events) > 0
    parts_of(run)[0].unlink()
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "state": "running"}))
    loaded = load_run(run)
    with pytest.warns(IncompleteRunWarning, match=r"'running', not complete.*misses") as caught:
        tables = (loaded.events, loaded.metrics)
    assert len(caught) == 1 and len(tables[1]) > 0
