"""Runs that start and cannot go on end cleanly: a diverging host, a full event directory.

Each exits 1 with a message (no traceback), marks its run directory ``failed`` with the reason,
and keeps what it wrote; an existing output file is replaced only with ``--force``."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

import esper.events.writer as writer_module
from esper.analysis import EventLog
from esper.cli import main

_REGRESSION = ["workload=slowly_changing_regression", "policy=rigl", "policy.density=0.1"]


def _only_run(storage: Path) -> Path:
    (run,) = [p for p in storage.iterdir() if p.is_dir() and p.name != "mlartifacts"]
    return run


def test_a_host_diverging_mid_run_fails_the_run_and_keeps_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage, out = tmp_path / "runs", tmp_path / "report.json"
    argv = ["evaluate", *_REGRESSION, "workload.lr=1.1", "--surgeries", "6",
            f"cluster.storage_path={storage}", "--json", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "Traceback" not in err
    run = _only_run(storage)
    meta = json.loads((run / "run.json").read_text())
    assert meta["state"] == "failed" and "lower workload.lr" in meta["error"]
    (report,) = json.loads(out.read_text())["reports"]  # the partial report is kept
    assert report["diverged"] and 1 <= report["surgeries"] < 6
    steps = EventLog.open(run).sql("SELECT list(surgery_step ORDER BY 1) AS s FROM metrics")
    assert steps["s"][0].tolist() == list(range(report["surgeries"] + 1))  # reading + surgeries


def test_a_host_diverging_before_its_first_reading_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "runs"
    argv = ["evaluate", *_REGRESSION, "workload.lr=3", f"cluster.storage_path={storage}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "run failed: the host diverged during its first" in err and "Traceback" not in err
    meta = json.loads((_only_run(storage) / "run.json").read_text())
    assert meta["state"] == "failed" and meta["error"].startswith("DivergedError")


def test_a_full_event_directory_stops_the_run_and_says_what_was_not_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module, "atomic_write", full)  # every event-log part
    storage = tmp_path / "runs"
    argv = ["evaluate", "policy=rigl", "policy.density=0.1", "--surgeries", "2",
            "policy.surgery_interval=10", f"cluster.storage_path={storage}"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "could not write" in err and "No space left on device" in err
    assert "were not" in err and "Traceback" not in err
    meta = json.loads((_only_run(storage) / "run.json").read_text())
    assert meta["state"] == "failed" and "EventLogWriteError" in meta["error"]


def test_an_existing_output_is_replaced_only_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, storage = tmp_path / "report.json", tmp_path / "runs"
    out.write_text("keep me")
    argv = ["evaluate", "policy=rigl", "policy.density=0.1", "--surgeries", "1",
            "policy.surgery_interval=10", f"cluster.storage_path={storage}",
            "--json", str(out)]  # fmt: skip
    assert main(argv) == 2
    assert "pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me" and not storage.exists()  # refused before any work
    assert main([*argv, "--force"]) == 0
    assert json.loads(out.read_text())["reports"][0]["policy"] == "rigl"


@pytest.mark.parametrize("command", ["evaluate", "prequential", "train-policy"])
def test_a_storage_path_that_cannot_hold_runs_is_refused_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([command, f"cluster.storage_path={blocker / 'runs'}"]) == 2
    assert "cluster.storage_path" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [blocker]
