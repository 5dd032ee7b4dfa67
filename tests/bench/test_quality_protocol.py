"""The quality protocol without Ray or training: seed sets, conditions, and what ``_run`` chooses
and reports, with fake training and evaluation runs (the real ones: ``test_quality.py``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from esper.bench import quality, quality_selection
from esper.bench.quality import README_BEGIN, README_END, TrainedVariant, credit_setup
from esper.bench.quality_evaluation import compose_config, policy_overrides
from esper.bench.quality_presets import ELASTIC, LEARNING, PRESETS
from esper.bench.quality_suite import (
    ALLOCATIONS,
    QualityPreset,
    Stream,
    conditions,
    run_labels,
    trained_variants,
)
from esper.bench.quality_training import training_overrides

STREAMS = (Stream("a", (), 300), Stream("b", (), 300))
FAKE = QualityPreset(
    "fake",
    STREAMS,
    densities=(0.2,),
    baselines=("rigl",),
    seeds=(1000, 1001, 1002, 1003),
    validation_seeds=(500, 501),
    train_seeds=(0, 10),
    train_surgeries=8,
    snapshot_every=4,
    ablations=("retrained_blind_gradient",),
    plasticity_stream="a",
    credit_surgeries=0,  # measure_stream needs a real checkpoint (tests/bench/test_credit.py)
)


def test_training_runs_never_share_a_seed_with_each_other_or_with_held_out_seeds() -> None:
    assert LEARNING.organism_seeds(1) == tuple(range(101, 113))  # 6 streams × 2 densities
    used = [s for run, seed in enumerate(LEARNING.train_seeds)
            for s in (seed, *LEARNING.organism_seeds(run))]  # fmt: skip
    assert len(used) == len(set(used))
    assert not set(used) & {*LEARNING.validation_seeds, *LEARNING.seeds}
    with pytest.raises(ValueError, match="training runs 0 and 1 both use seed 5"):
        dataclasses.replace(LEARNING, train_seeds=(0, 5))
    with pytest.raises(ValueError, match="uses validation seed 500"):
        dataclasses.replace(LEARNING, train_seeds=(0, 490))
    with pytest.raises(ValueError, match="uses evaluation seed 1000"):
        dataclasses.replace(LEARNING, train_seeds=(995,))
    with pytest.raises(ValueError, match="both validation and evaluation"):
        dataclasses.replace(LEARNING, validation_seeds=(500, 1004))
    with pytest.raises(ValueError, match="train_seeds is empty"):
        dataclasses.replace(LEARNING, train_seeds=())
    with pytest.raises(ValueError, match="allocations"):
        dataclasses.replace(LEARNING, allocations=("erk", "bogus"))


def test_allocations_are_the_scalpels_distributions() -> None:
    from esper.workloads.scalpel.allocation import DISTRIBUTIONS

    assert set(ALLOCATIONS) == set(DISTRIBUTIONS.names())


def test_learning_preset_expands_runs_ablations_and_allocations() -> None:
    conds = conditions(LEARNING)
    keys = [(c.label, c.density, c.allocation) for c in conds]
    assert len(keys) == len(set(keys))
    for density in (0.1, 0.05):
        for baseline in ("rigl", "rigl_continual"):
            assert {a for label, d, a in keys if (label, d) == (baseline, density)} == {
                "uniform",
                "erk",
            }
    by_label = {c.label: c for c in conds if c.allocation is None}
    assert by_label["emrakul"].run == 0 and by_label["dense"].allocation is None
    for run in (1, 2):
        full, imitation = (
            by_label[f"emrakul_run{run}"],
            by_label[f"emrakul_imitation_only_run{run}"],
        )
        assert (full.run, full.variant, full.density) == (run, "emrakul", 0.1)
        assert (imitation.run, imitation.variant) == (run, "imitation_only")
    retrained = by_label["emrakul_retrained_blind_gradient"]
    assert retrained.variant == "retrained_blind_gradient"
    assert retrained.switches == (("blind", ("gradient",)),)
    assert by_label["emrakul_blind_gradient"].variant == "emrakul"  # evaluation-only blindness
    assert trained_variants(LEARNING) == [
        (0, "emrakul"), (0, "retrained_blind_gradient"), (0, "retrained_blind_topology"),
        (1, "emrakul"), (2, "emrakul"),
    ]  # fmt: skip
    assert run_labels(LEARNING)[2] == ("emrakul_run2", "emrakul_imitation_only_run2")
    # several runs need run 0's imitation snapshot even when the ablations do not name it
    runs_only = dataclasses.replace(LEARNING, ablations=())
    assert "emrakul_imitation_only" in {c.label for c in conditions(runs_only)}
    single = dataclasses.replace(LEARNING, train_seeds=(0,), ablations=(), allocations=("erk",))
    labels = [c.label for c in conditions(single)]
    assert not any("run" in label or "imitation" in label for label in labels)
    assert {c.allocation for c in conditions(single) if c.policy == "rigl"} == {"erk"}


def test_elastic_preset_compares_the_elastic_variant_at_every_density() -> None:
    conds = conditions(ELASTIC)
    elastic = [c for c in conds if c.label == "emrakul_elastic"]
    assert sorted(c.density for c in elastic) == [0.05, 0.1]
    assert all(c.variant == "elastic" for c in elastic)
    assert {c.density for c in conds if c.label == "rigl_elastic"} == {0.05, 0.1}
    assert (0, "elastic") in trained_variants(ELASTIC) and ELASTIC.focus == "emrakul_elastic"
    trained = compose_config(training_overrides(ELASTIC, "elastic", 0))
    assert trained.policy.params["elastic"] is True
    stream = ELASTIC.streams[0]
    overrides = policy_overrides(stream, "rigl_elastic", 0.05)
    assert f"policy.params.t_end={int(0.75 * stream.steps)}" in overrides


def test_every_preset_composes_before_any_work() -> None:
    for preset in PRESETS.values():
        quality._check_configs(preset)  # the control, blind groups and allocations exist
    blind = compose_config(training_overrides(LEARNING, "retrained_blind_topology", 2))
    assert blind.experiment.seed == 200 and list(blind.policy.params["blind"]) == ["topology"]
    assert blind.policy.training.control == LEARNING.control
    assert blind.policy.training.surgeries == LEARNING.train_surgeries
    bare = compose_config(training_overrides(PRESETS["small"], "no_imitation", 0))
    assert bare.policy.training.imitation == 0
    with pytest.raises(ValueError, match="control"):
        quality._check_configs(dataclasses.replace(FAKE, streams=LEARNING.streams,
                                                   control="bogus"))  # fmt: skip


def test_train_overrides_reach_every_training_and_bad_ones_fail_first(tmp_path: Path) -> None:
    quieter = dataclasses.replace(LEARNING, train_overrides=(
        "policy.params.specialist_log_std=-1.5", "policy.params.general_log_std=-2.0"))  # fmt: skip
    for run, variant in trained_variants(quieter):
        params = compose_config(training_overrides(quieter, variant, run)).policy.params
        assert (params["specialist_log_std"], params["general_log_std"]) == (-1.5, -2.0)
    with pytest.raises(ValueError, match=r"policy\.params\.bogus"):
        quality.run_quality(
            "learning", tmp_path / "q.json", train_overrides=["policy.params.bogus=1"]
        )
    with pytest.raises(ValueError, match="--checkpoint trains none"):
        quality.run_quality("anchors", tmp_path / "q.json", checkpoint=tmp_path / "p.pt",
                            train_overrides=["policy.params.hidden=32"])  # fmt: skip
    with pytest.raises(ValueError, match="sweep_overrides"):
        quality.run_quality("full", tmp_path / "q.json", train_overrides=["reward.delta=0"])
    assert not (tmp_path / "q.json").exists()


def test_train_overrides_reach_the_training_organisms(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_train_policy(cfg: Any, organisms: list[Any], **_: Any) -> None:
        seen["cfg"], seen["organisms"] = cfg, organisms
        raise Stop

    monkeypatch.setattr("esper.policies.training.train_policy", fake_train_policy)
    preset = dataclasses.replace(LEARNING, train_overrides=("reward.delta=0",))
    with pytest.raises(Stop):
        quality.train_variant(preset, "emrakul", str(tmp_path))
    assert seen["cfg"].reward.delta == 0.0
    assert [o.reward.delta for o in seen["organisms"]] == [0.0] * len(seen["organisms"])


class _Recorder:
    """Fake training and evaluation: what the protocol asked for, and made-up scores."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.trained: list[tuple[int, str]] = []

    def train(self, preset: QualityPreset, variant: str, out_dir: str, run: int) -> TrainedVariant:
        self.trained.append((run, variant))
        folder = f"{out_dir}/run{run}/{variant}"
        snaps = tuple((s, f"{folder}/surgery-{s:06d}.pt") for s in (0, 4, 8))
        hyper = {"control": preset.control, "imitation": preset.imitation,
                 "rollout": preset.rollout, "learner_params": dict(preset.learner_params),
                 "reward": {"alpha": 1.0}}  # fmt: skip
        return TrainedVariant(run, preset.train_seeds[run], variant, folder, snaps, 8, hyper)

    def evaluate(
        self,
        stream: Stream,
        policy: str,
        density: float,
        seed: int,
        checkpoint: str | None = None,
        switches: tuple[tuple[str, Any], ...] = (),
        horizon: float = 0.75,
        allocation: str | None = None,
        overrides: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        self.calls.append({"policy": policy, "seed": seed, "checkpoint": checkpoint,
                           "allocation": allocation, "switches": switches,
                           "overrides": overrides, "density": density})  # fmt: skip
        noise = 0.01 * ((seed * 7 + ord(stream.name)) % 5)
        acc = 0.5 + noise
        if checkpoint is not None:  # later snapshots are better; run 1 is a little worse
            acc += 0.02 * int(checkpoint[-9:-3]) / 4 - (0.01 if "/run1/" in checkpoint else 0)
        if allocation is not None:  # uniform wins on validation seeds, erk on evaluation ones
            acc += 0.05 * ((allocation == "uniform") == (seed < 1000))
        if overrides:  # the middle step size wins on validation seeds, the largest on evaluation
            acc += 0.03 * (f"workload.lr={0.06 if seed < 1000 else 0.2}" in overrides)
        metrics = {"online_accuracy": acc, "task_end_accuracy": acc, "recovery_steps": 10.0,
                   "plasticity": 0.0, "final_density": density, "flops": density,
                   "reversal_rate": 0.0}  # fmt: skip
        return {"metrics": metrics, "task_end": [acc, acc], "diverged": False}


def fake_runs(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    """Replace training, evaluation, Ray and the plot by a :class:`_Recorder`."""
    recorder = _Recorder()
    for module in (quality, quality_selection):  # selection runs on the validation seeds
        monkeypatch.setattr(module, "remote", lambda fn: SimpleNamespace(remote=fn))
        monkeypatch.setattr(
            module, "gather", lambda refs, keys, *_: dict(zip(keys, refs, strict=True))
        )
        monkeypatch.setattr(module, "evaluate_run", recorder.evaluate)
    monkeypatch.setattr(quality, "train_variant", recorder.train)
    monkeypatch.setattr(quality, "plot_plasticity", lambda report, path: None)
    return recorder


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    return fake_runs(monkeypatch)


def _report(
    tmp_path: Path, preset: QualityPreset = FAKE, checkpoint: Path | None = None
) -> tuple[dict[str, Any], str]:
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\n")
    out = tmp_path / "quality.json"
    with (tmp_path / "log.txt").open("w") as log:
        report = quality._run(preset, out, readme, str(tmp_path / "runs"), 0.0, Console(file=log),
                              checkpoint)  # fmt: skip
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    return report, readme.read_text()


def test_allocations_and_checkpoints_are_chosen_on_validation_seeds_only(
    faked: _Recorder, tmp_path: Path
) -> None:
    report, _ = _report(tmp_path)
    chosen = set(report["chosen"].values())
    validation = set(FAKE.validation_seeds)
    for call in faked.calls:
        if call["seed"] in FAKE.seeds:  # evaluation: only what was chosen
            assert call["allocation"] in (None, "uniform")
            assert call["checkpoint"] is None or call["checkpoint"] in chosen
        else:
            assert call["seed"] in validation
    rows = {(r["policy"], r["density"]): r for r in report["allocation"]}
    assert set(rows) == {("rigl", 0.2), ("rigl_continual", 0.2)}
    assert rows[("rigl", 0.2)]["chosen"] == "uniform"  # erk scores better, on evaluation seeds
    assert set(rows[("rigl", 0.2)]["validation"]) == {"uniform", "erk"}
    suite = {(r["policy"], r["density"]): r for r in report["results"] if r["stream"] == "suite"}
    assert suite[("rigl", 0.2)]["allocation"] == "uniform"
    assert "allocation" not in suite[("emrakul", 0.2)]
    assert report["chosen"]["emrakul"].endswith("run0/emrakul/surgery-000008.pt")
    assert report["chosen"]["imitation_only_run1"].endswith("run1/emrakul/surgery-000000.pt")
    assert {"emrakul", "imitation_only", "retrained_blind_gradient", "emrakul_run1",
            "imitation_only_run1"} == set(report["chosen"])  # fmt: skip
    retrained = [c for c in faked.calls if c["checkpoint"] and "retrained" in c["checkpoint"]]
    assert retrained and all(c["switches"] == (("blind", ("gradient",)),) for c in retrained)


def test_a_single_allocation_needs_no_validation_runs(faked: _Recorder, tmp_path: Path) -> None:
    report, _ = _report(tmp_path, dataclasses.replace(FAKE, allocations=("erk",)))
    assert all(r["validation"] == {} and r["chosen"] == "erk" for r in report["allocation"])
    assert not [c for c in faked.calls if c["allocation"] and c["seed"] < 1000]


def test_report_has_training_provenance_runs_and_ablation_differences(
    faked: _Recorder, tmp_path: Path
) -> None:
    report, markdown = _report(tmp_path)
    assert report["train_seeds"] == [0, 10]
    run0, run1 = report["training"]
    assert (run0["seed"], run1["seed"]) == (0, 10) and run1["organism_seeds"] == [11, 12]
    assert set(run0["variants"]) == {"emrakul", "retrained_blind_gradient"}
    assert set(run1["variants"]) == {"emrakul"} and run1["directory"].endswith("run1")
    full = run0["variants"]["emrakul"]
    assert [c["surgeries"] for c in full["curve"]] == [0, 4, 8]
    assert [c["imitation"] for c in full["curve"]] == [True, False, False]
    assert full["imitation_validation"] == full["curve"][0]["validation"]
    assert full["chosen"]["surgeries"] == 8 and full["surgeries_trained"] == 8
    assert full["hyperparameters"]["control"] == FAKE.control
    assert {r["run"] for r in report["selection"]} == {0, 1}
    spread = report["between_runs"]
    assert [(e["run"], e["seed"], e["policy"]) for e in spread["runs"]] == [
        (0, 0, "emrakul"), (1, 10, "emrakul_run1")
    ]  # fmt: skip
    for entry in spread["runs"]:
        rl = entry["rl_over_imitation"]
        assert rl["mean_diff"] == pytest.approx(0.04) and rl["n"] == 2 * 4
    assert spread["runs"][0]["suite_mean"] - spread["runs"][1]["suite_mean"] == pytest.approx(0.01)
    assert spread["sd"] == pytest.approx(0.01 / 2**0.5)
    vs = {(p["vs"], p["density"]) for p in report["paired"] if p["stream"] == "suite"}
    assert ("emrakul_retrained_blind_gradient", 0.2) in vs
    assert "| allocation |" in markdown and "| rigl | 0.2 | uniform |" in markdown
    assert "| emrakul | 0.2 | — |" in markdown
    assert "| 1 (emrakul_run1, seed 10) |" in markdown and "Between 2 training runs" in markdown


def test_the_credit_measurement_runs_each_stream_on_training_seeds_at_the_first_density() -> None:
    preset = dataclasses.replace(FAKE, densities=(0.2, 0.1), credit_surgeries=5)
    jobs = credit_setup(preset, "ckpt.pt")
    assert [(j[0].name, j[1], j[2]) for j in jobs] == [
        (s.name, 0.2, seed) for s, seed in zip(preset.streams, preset.organism_seeds(0)[::2],
                                               strict=True)
    ]  # fmt: skip
    assert all(j[3:] == ("ckpt.pt", 5, preset.control) for j in jobs)
    assert not set(j[2] for j in jobs) & (set(preset.seeds) | set(preset.validation_seeds))
    assert credit_setup(dataclasses.replace(preset, control="none"), "ckpt.pt") == []
