"""The one run loader: what a run directory is, and the errors that name what is missing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from esper.analysis import EventLog, Run, RunError, load_run, load_runs
from esper.events.writer import EventWriter, EventWriterConfig
from tests.analysis._synthetic_runs import write_run
from tests.events._event_log_data import make_event


def test_a_run_has_metadata_config_tables_and_a_log(tmp_path: Path) -> None:
    path = write_run(tmp_path / "r1", seed=4, replicas=2, steps=6, drift_every=3)
    run = load_run(path)
    assert run.path == path and run.run_id == "r1"
    assert run.meta["seed"] == 4 and run.meta["workload"] == "digits_permuted"
    assert run.config == run.meta["config"] and run.config["workload"]["name"] == "digits_permuted"
    assert len(run.metrics) == 2 * 6 and set(run.events["action"]) == {"prune", "regrow"}
    assert run.events is run.events  # read once
    with run.open_log() as log:
        assert isinstance(log, EventLog)
        assert log.sql("SELECT count(*) AS n FROM metrics")["n"][0] == 12


def test_load_runs_keeps_order_and_passes_loaded_runs_through(tmp_path: Path) -> None:
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b")
    loaded = load_run(a)
    runs = load_runs([b, loaded, str(a)])
    assert [r.run_id for r in runs] == ["b", "a", "a"] and runs[1] is loaded
    assert all(isinstance(r, Run) for r in runs)
    with pytest.raises(RunError, match=str(tmp_path / "nope")):
        load_runs([a, tmp_path / "nope"])


def _tables_only(path: Path) -> Path:
    with EventWriter(EventWriterConfig(str(path), "t0", 0)) as writer:
        writer.write([make_event(i) for i in range(4)])
    return path


def _a_file(path: Path) -> None:
    path.write_text("x")


def _bare(path: Path) -> None:
    path.mkdir()


def _meta_only(path: Path) -> None:
    path.mkdir()
    (path / "run.json").write_text("{}")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (None, "does not exist"),
        (_a_file, "it is a file"),
        (_bare, r"has no run\.json and no table directory \(events/, metrics/\)"),
        (_tables_only, r"it has no run\.json$"),
        (_meta_only, r"it has no table directory"),
    ],
)
def test_what_is_not_a_run_is_named(
    tmp_path: Path, make: Callable[[Path], object] | None, needle: str
) -> None:
    path = tmp_path / "candidate"
    if make is not None:
        make(path)
    with pytest.raises(RunError, match=needle) as err:
        load_run(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("text", "needle"), [("{not json", "not valid JSON"), ("[1]", "object")])
def test_bad_run_json_is_named(tmp_path: Path, text: str, needle: str) -> None:
    path = _tables_only(tmp_path / "r")
    (path / "run.json").write_text(text)
    with pytest.raises(RunError, match=needle) as err:
        load_run(path)
    assert str(path / "run.json") in str(err.value)


def test_a_run_with_events_only_gets_coarse_metrics(tmp_path: Path) -> None:
    path = _tables_only(tmp_path / "r")
    (path / "run.json").write_text(json.dumps({"run_id": "r"}))
    run = load_run(path)
    assert len(run.events) == 4
    assert run.metrics["surgery_step"].tolist() == [0, 1, 2, 3]
    assert {"online_accuracy", "density", "reward"} <= set(run.metrics.columns)
