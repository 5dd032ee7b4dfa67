"""``esper bench quality`` end to end on a tiny preset (real Ray tasks, real training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.bench.quality import README_BEGIN, README_END, run_quality
from esper.bench.quality_presets import PRESETS
from esper.bench.quality_suite import QualityPreset, Stream, conditions
from esper.cli import main

TINY = QualityPreset(
    "tiny",
    (
        Stream(
            "permuted",
            (
                "workload=digits_permuted",
                "workload.num_tasks=3",
                "workload.schedule.params.task_length=100",
                "workload.host.params.hidden=[16]",
                "policy.surgery_interval=50",
            ),
            300,
        ),
    ),
    densities=(0.2,),
    baselines=("static", "rigl"),
    seeds=(1000, 1001),
    validation_seeds=(500,),
    train_surgeries=8,
    rollout=4,
    imitation=2,
    snapshot_every=4,
    ablations=("imitation_only", "general_rigl"),
    plasticity_stream="permuted",
)


def test_conditions_cover_every_surgeon_once_per_density_and_allocation() -> None:
    small = conditions(PRESETS["small"])
    keys = [(c.label, c.density, c.allocation, c.options) for c in small]
    assert len(keys) == len(set(keys))
    labels = {(label, density) for label, density, _, _ in keys}
    assert ("dense", 1.0) in labels and ("cbp", 1.0) in labels
    for density in (0.1, 0.05):
        for name in ("emrakul", "rigl", "rigl_continual", "set", "gmp", "cbp", "redo", "static",
                     "random", "shrink_perturb", "swr", "upgd", "l2_init", "ln_wd",
                     "rigl_upgd"):  # fmt: skip
            allocations = {a for label, d, a, _ in keys if (label, d) == (name, density)}
            assert allocations == ({None} if name == "emrakul" else {"uniform", "erk"})
    upgd = [c for c in small if (c.label, c.density, c.allocation) == ("upgd", 0.1, "erk")]
    assert [c.options for c in upgd] == [(f"workload.lr={lr}",) for lr in ("0.02", "0.06", "0.2")]
    for name in ("dense_upgd", "dense_l2_init", "dense_ln_wd"):
        assert {(d, a) for label, d, a, _ in keys if label == name} == {(1.0, None)}
    switched = {c.label: c for c in conditions(PRESETS["small"])}["emrakul_blind_gradient"]
    assert switched.variant == "emrakul" and switched.switches == (("blind", ("gradient",)),)
    with pytest.raises(KeyError, match="unknown ablation 'bogus'"):
        conditions(QualityPreset("x", TINY.streams, ablations=("bogus",)))


@pytest.mark.slow
def test_tiny_quality_run_writes_json_plot_and_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n")
    out = tmp_path / "quality.json"
    report = run_quality(TINY, out, readme, num_cpus=2, storage=str(tmp_path / "runs"))
    data = json.loads(out.read_text())
    assert data["preset"] == "tiny" and data["seeds"] == [1000, 1001]
    assert data == json.loads(json.dumps(report, default=str))
    labels = {(r["policy"], r["density"]) for r in data["results"] if r["stream"] == "suite"}
    assert labels == {
        ("dense", 1.0),
        ("static", 0.2),
        ("rigl", 0.2),
        ("rigl_continual", 0.2),
        ("emrakul", 0.2),
        ("emrakul_imitation_only", 0.2),
        ("emrakul_general_rigl", 0.2),
        ("cbp", 1.0),
    }
    for r in data["results"]:
        lo, hi = r["online_accuracy"]["ci"]
        assert lo is None or lo <= r["online_accuracy"]["mean"] <= hi
    vs = {(p["vs"], p["density"]) for p in data["paired"] if p["stream"] == "suite"}
    assert {("rigl", 0.2), ("static", 0.2), ("dense", 0.2), ("cbp", 0.2)} <= vs
    # the checkpoint chosen on the validation seed is one RL snapshot, never the BC one
    chosen = Path(data["chosen"]["emrakul"])
    assert chosen.exists() and not chosen.name.endswith("000000.pt")
    assert data["training"][0]["variants"]["emrakul"]["chosen"]["path"] == str(chosen)
    assert {r["policy"] for r in data["allocation"]} == {"static", "rigl", "rigl_continual"}
    assert (tmp_path / "quality-plasticity.png").stat().st_size > 1000
    text = readme.read_text()
    assert "old" not in text and "| emrakul | 0.2 |" in text and text.endswith("after\n")
    assert len(data["runs"]) == 2 * (5 + 3)  # seeds × (5 conditions + 3 emrakul) on 1 stream
    assert data["plasticity"] and {"early", "late", "slope_per_task"} <= set(data["plasticity"][0])


def test_bad_outputs_are_refused_before_any_work(tmp_path: Path) -> None:
    assert main(["bench", "quality", "--json", str(tmp_path)]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["bench", "quality", "--json", str(blocker / "q.json")]) == 2  # a file in the way
    readme_in_the_way = ["--json", str(tmp_path / "q.json"), "--readme", str(blocker / "R.md")]
    assert main(["bench", "quality", *readme_in_the_way]) == 2
    missing = ["--json", str(tmp_path / "q.json"), "--readme", str(tmp_path / "none.md")]
    assert main(["bench", "quality", *missing]) == 2
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    args = ["bench", "quality", "--json", str(tmp_path / "q.json"), "--readme", str(readme)]
    assert main(args) == 2
    assert not (tmp_path / "q.json").exists()
