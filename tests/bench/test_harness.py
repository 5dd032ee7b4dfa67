"""The benchmark results file: a run records its benchmarks and keeps everyone else's."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from esper.bench.harness import PERF, BenchResult, paired_against, pooled, write_results
from esper.bench.perf import run_perf
from esper.errors import RunError


def _result(ratio: float) -> BenchResult:
    return BenchResult(1.0, "anchor", 1.0, ratio, 1.0, "<=")


def test_a_run_keeps_the_results_of_benchmarks_it_did_not_run(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    earlier_machine = {"hostname": "old", "time_utc": "2026-01-01T00:00:00Z"}
    earlier = {
        "machine": earlier_machine,
        "results": {"a": {**_result(0.5).to_json()}, "b": {**_result(0.7).to_json()}},
        "skipped": {"c": "needs CUDA", "b_gpu": "needs CUDA"},
    }
    path.write_text(json.dumps(earlier))
    write_results(path, {"b": _result(0.9), "c": _result(0.8)}, {"d": "needs CUDA"})
    data = json.loads(path.read_text())
    assert data["machine"]["hostname"] != "old"
    assert data["results"]["a"]["ratio"] == 0.5
    assert data["results"]["a"]["machine"] == earlier_machine  # where it was measured
    assert data["results"]["b"]["ratio"] == 0.9
    assert data["results"]["b"]["machine"] == data["machine"]
    assert data["results"]["c"]["met"] is True
    assert data["skipped"] == {"b_gpu": "needs CUDA", "d": "needs CUDA"}  # c ran now


def test_a_benchmark_skipped_now_keeps_its_earlier_result(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    write_results(path, {"gpu": _result(0.8)}, {})
    write_results(path, {}, {"gpu": "needs CUDA"})
    data = json.loads(path.read_text())
    assert data["results"]["gpu"]["ratio"] == 0.8
    assert data["skipped"] == {"gpu": "needs CUDA"}


def test_a_damaged_results_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="fix or remove it"):
        write_results(path, {"a": _result(0.5)}, {})
    assert path.read_text() == "{not json"


def _square(job: int) -> tuple[int, int]:
    return job, job * job


def test_pooled_runs_every_job_in_forked_workers_and_reports_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert sorted(pooled(_square, [1, 2, 3, 4], workers=2, every=2)) == [
        (1, 1), (2, 4), (3, 9), (4, 16)
    ]  # fmt: skip
    assert capsys.readouterr().out.count("/4 runs") == 2


def test_paired_against_gives_each_condition_its_mean_and_paired_difference() -> None:
    scores = {"ref": {"u1": 0.5, "u2": 0.7}, "x": {"u1": 0.6, "u2": 0.9, "extra": 0.0}}
    rows = paired_against(scores, "ref")
    assert rows["ref"]["diff"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert rows["x"]["mean"] == pytest.approx(0.75)  # over the reference's units only
    assert rows["x"]["diff"]["mean"] == pytest.approx(0.15)


def test_a_failing_benchmark_is_named_after_the_others_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> BenchResult:
        raise ZeroDivisionError("no time measured")

    monkeypatch.setitem(PERF._entries, "zz_broken", broken)
    monkeypatch.setitem(PERF._entries, "zz_fine", lambda: _result(0.5))
    path = tmp_path / "perf.json"
    with pytest.raises(RunError, match="zz_broken: FAILED: ZeroDivisionError: no time measured"):
        run_perf(["zz_broken", "zz_fine"], path, Console(file=io.StringIO()), modules=())
    data = json.loads(path.read_text())
    assert data["results"]["zz_fine"]["ratio"] == 0.5
    assert data["skipped"]["zz_broken"].startswith("FAILED: ZeroDivisionError")
