"""``esper bench primacy``: one run of a surgeon is the two phases of a misled agent; the whole
experiment (slow) writes its table, JSON and plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from esper.bench.primacy import PRESETS, SURGEONS, run_surgeon
from esper.cli import main

TINY = PRESETS["tiny"]


@pytest.mark.parametrize("label", ["dense+resets", "rigl"])
def test_a_run_scores_both_phases_of_the_misled_agent(label: str) -> None:
    run = run_surgeon(TINY, label, seed=0, checkpoint=None)
    assert run["surgeon"] == label and not run["diverged"]
    assert run["misleading"] == 0.0  # paid a point less per step: the normalised return is 0
    assert 0.0 <= run["real"] <= 1.0 and math.isfinite(run["real_last_quarter"])
    assert run["density"] == pytest.approx(
        1.0 if not SURGEONS[label][1] else TINY.density, abs=0.02
    )
    assert len(run["curve"]) == 2 * TINY.phase_steps // TINY.surgery_interval


def test_bad_settings_are_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.pt"
    args = ["bench", "primacy", "--preset", "tiny", "--json", str(tmp_path / "p.json")]
    assert main([*args, "--checkpoint", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow
def test_the_experiment_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "primacy.json"
    args = ["bench", "primacy", "--preset", "tiny", "--json", str(out), "--num-cpus", "2"]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert set(result["summary"]) == set(SURGEONS) and result["machine"]
    assert len(result["runs"]) == len(SURGEONS) * len(TINY.seeds)
    assert result["summary"]["rigl"]["minus_dense"]["n"] == len(TINY.seeds)
    assert "| emrakul | 0.10 |" in out.with_suffix(".md").read_text()
    assert (tmp_path / "primacy-curves.png").stat().st_size > 1000


def test_the_control_learns_the_real_task_from_the_start() -> None:
    run = run_surgeon(TINY, "dense, never misled", seed=0, checkpoint=None)
    assert run["misleading"] is None  # it never saw the misleading phase
    half = len(run["curve"]) // 2
    assert run["real"] > 0.0 and any(v > 0 for v in run["curve"][:half])  # paid from step one
