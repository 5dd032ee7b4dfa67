"""The HTML report: one self-contained file with the table, metadata and plots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from esper.analysis.compare import CompareError
from esper.analysis.report import write_report
from esper.events.learning import record_iteration
from tests.analysis._synthetic_runs import REWARD, write_run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("report")
    runs = [
        write_run(
            root / f"run{i}",
            seed=i // 2,
            steps=20,
            drift_every=8,
            reward={**REWARD, "beta": 0.1 * (1 + i % 2)},
            flops=0.4 + 0.1 * (i % 2),
        )
        for i in range(4)
    ]
    out = write_report(runs, root / "out" / "report.html")
    return out, out.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file(report: tuple[Path, str]) -> None:
    path, text = report
    assert path.is_file() and text.startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp left behind
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", text)
    assert sources and all(s.startswith("data:") for s in sources)
    assert "<link" not in text and "<script" not in text
    assert "url(" not in text  # no CSS-fetched resources either


def test_report_contains_table_plots_and_metadata(report: tuple[Path, str]) -> None:
    _, text = report
    assert "Comparison by reward" in text and "<table" in text
    assert "β=0.1" in text and "β=0.2" in text and "±" in text
    # 2 Pareto plots, then accuracy, density and raster per run.
    assert text.count('src="data:image/png;base64,') == 2 + 3 * 4
    for run in ("run0", "run1", "run2", "run3"):
        assert f"<h3>{run}</h3>" in text
    assert "digits_permuted" in text and "Strategy detectors" in text


def test_report_bad_key_writes_nothing(report: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = report
    runs = [path.parent.parent / "run0"]
    with pytest.raises(CompareError, match="no key"):
        write_report(runs, tmp_path / "bad.html", by="nonsense")
    assert not list(tmp_path.iterdir())


def test_a_run_with_a_learner_shows_its_learning_curves(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", seed=0, steps=12, drift_every=6, reward=REWARD, flops=0.4)
    for trial in ("t0", "t1"):
        for iteration in (1, 2, 3):
            record_iteration(run, trial, {"iteration": iteration, "online_accuracy": 0.5})
    text = write_report([run], tmp_path / "report.html").read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == 2 + 3 + 1
    assert "learning curves (fitness per iteration)" in text
