"""``esper bench strategies``: refusals before any work, and (slow) a tiny real run whose
report counts every detector's episodes per surgeon and draws both figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.analysis.detectors import DETECTORS
from esper.bench.strategies import run_strategies
from esper.cli import main

CHECKPOINT = Path(__file__).resolve().parents[2] / "benchmarks/results/quality-learning-emrakul.pt"


def test_bad_checkpoints_and_outputs_are_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.json"
    with pytest.raises(ValueError, match="at least one --checkpoint"):
        run_strategies("tiny", {}, out, tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        run_strategies("tiny", {"x": tmp_path / "nowhere.pt"}, out, tmp_path)
    with pytest.raises(ValueError, match="unknown"):
        run_strategies("huge", {"x": CHECKPOINT}, out, tmp_path)
    assert main(["bench", "strategies", "--checkpoint", str(CHECKPOINT), "--json", str(out)]) == 2
    assert "must be LABEL=PATH" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_tiny_run_reports_every_detector_for_every_surgeon(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    code = main(["bench", "strategies", "--preset", "tiny", "--checkpoint",
                 f"fixed={CHECKPOINT}", "--json", str(out), "--storage", str(tmp_path / "runs"),
                 "--num-cpus", "1"])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    seen = {(e["surgeon"], e["detector"]) for e in report["strategies"]}
    assert seen == {(s, d) for s in ("fixed", "rigl", "rigl_elastic") for d in DETECTORS}
    assert all("effect" in e for e in report["strategies"] if e["detector"] == "lazarus")
    assert (tmp_path / "s-breathing.png").stat().st_size > 0
    assert (tmp_path / "s-lazarus.png").stat().st_size > 0
    assert len(report["runs"]) == 3 and report["machine"]
