"""``esper bench strategies``: refusals before any work, the ``heated`` preset's live heat on a
real run, and (slow) a tiny real run whose report counts every detector's episodes per surgeon
and draws both figures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from esper.analysis.detectors import DETECTORS
from esper.analysis.runs import load_run
from esper.bench.quality_evaluation import evaluate_run
from esper.bench.strategies import PRESETS, Surgeon, run_strategies, switches
from esper.cli import main
from esper.policies.base import make_policy
from esper.policies.emrakul import EmrakulPolicy, SpecialistAction

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
    surgeons = ("fixed", "rigl", "rigl_elastic")
    assert seen == {(s, d) for s in surgeons for d in (*DETECTORS, "heat_burst")}
    assert all("effect" in e for e in report["strategies"] if e["detector"] in ("lazarus",
               "heat_burst"))  # fmt: skip
    assert (tmp_path / "s-breathing.png").stat().st_size > 0
    assert (tmp_path / "s-lazarus.png").stat().st_size > 0
    assert len(report["runs"]) == 3 and report["machine"]


class _HeatsFirst(EmrakulPolicy):
    """An Emrakul whose every layer asks for a heat burst at the first surgery."""

    def _heated(self, name: str, action: SpecialistAction) -> SpecialistAction:
        if self.episode.surgery == 0:
            action = dataclasses.replace(action, heat=True)
        return super()._heated(name, action)


def test_the_heated_preset_runs_put_heat_bursts_on_the_mechanisms_temperature(
    tmp_path: Path,
) -> None:
    """Under ``heated``'s overrides a heat burst heats the Hard Concrete temperature ``β`` by
    ``heat_tau`` and cools it back, each change a temperature event in the recorded run."""
    stream = PRESETS["tiny"].streams[0]
    run = str(tmp_path / "run")
    evaluate_run(stream, "emrakul", 0.1, 1000, switches=(("__class__", _HeatsFirst),),
                 overrides=PRESETS["heated"].overrides, record_to=run)  # fmt: skip
    events = load_run(run).events
    heated = events.loc[events["heat"].fillna(False).astype(bool), "surgery_step"]
    assert set(heated) == {0, 1, 2}  # heat_surgeries = 3
    temperatures = events.loc[events["action"] == "temperature"]
    heat_tau = make_policy("emrakul").heat[1]  # type: ignore[attr-defined]
    beta = 2 / 3  # Hard Concrete's default
    assert sorted(temperatures["value"].astype(float).round(6).unique()) == [
        round(beta, 6),
        round(beta * heat_tau, 6),
    ]
    assert temperatures.groupby("layer").size().eq(2).all()  # heated once, cooled once


def test_a_sampling_preset_makes_the_checkpoints_sample_and_leaves_the_baselines() -> None:
    emrakul, rigl = Surgeon("x", "emrakul", str(CHECKPOINT)), Surgeon("rigl", "rigl")
    assert switches(PRESETS["heated"], emrakul) == (("greedy", False),)
    assert switches(PRESETS["heated"], rigl) == ()
    assert switches(PRESETS["small"], emrakul) == ()
