"""Training the quality benchmark's policy by a PBT sweep (``trainer="sweep"``): the sweep's
overrides and seeds, and ``_run``'s dispatch, without Ray; one real tiny sweep end to end
(slow)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from esper.bench import quality, quality_selection
from esper.bench.quality import run_quality
from esper.bench.quality_evaluation import compose_config
from esper.bench.quality_presets import PRESETS
from esper.bench.quality_suite import TRAINERS, QualityPreset, Stream, conditions
from esper.bench.quality_sweep import (
    SEARCH_BOUNDS,
    is_swept,
    sweep_config,
    sweep_organism_seeds,
    sweep_overrides,
)
from esper.bench.quality_training import TrainedVariant
from esper.conf.searchable import SEARCHABLE
from esper.seeding import small_seed
from tests.bench.test_quality_protocol import FAKE, _Recorder


def _stream(name: str, workload: str) -> Stream:
    overrides = (f"workload={workload}", "workload.num_tasks=2",
                 "workload.schedule.params.task_length=150")  # fmt: skip
    return Stream(name, overrides, 300)


TINY = QualityPreset(
    "tiny_sweep",
    (_stream("permuted", "digits_permuted"), _stream("covariate", "mnist1d_covariate")),
    densities=(0.2,),
    baselines=("static",),
    seeds=(1000,),
    validation_seeds=(500,),
    train_surgeries=16,  # 2 members × 2 replicas × 2 surgeries × 2 iterations
    rollout=2,
    credit_surgeries=0,
    snapshot_every=1,
    ablations=(),
    allocations=("erk",),
    plasticity_stream="permuted",
    trainer="sweep",
    sweep_members=2,
    sweep_overrides=(
        "search.perturbation_interval=1",  # a checkpoint (and an exploit) every iteration
        "search.quantile_fraction=0.5",
        "cluster.replica_cpus=0.25",
        "cluster.learner_cpus=0.25",
    ),
)
"""A sweep of 2 members × 2 replicas for 2 iterations of 2 surgeries (the replicas run the
streams' workload presets at their default sizes: a sweep cannot shrink them)."""

SWEPT = [p for p in (*PRESETS.values(), TINY) if p.trainer == "sweep"]


def test_full_and_learning_sweep_train_by_sweep_and_the_other_presets_in_process() -> None:
    swept = ("full", "learning_sweep")
    assert all(PRESETS[n].trainer == "sweep" and PRESETS[n].train_surgeries == 20_000
               for n in swept)  # fmt: skip
    assert {p.trainer for n, p in PRESETS.items() if n not in swept} == {"in_process"}
    assert is_swept(PRESETS["full"], "emrakul") and not is_swept(PRESETS["full"], "no_general")
    assert not is_swept(PRESETS["small"], "emrakul")


@pytest.mark.parametrize("preset", SWEPT, ids=[p.name for p in SWEPT])
def test_the_sweep_composes_within_budget_bounds_and_training_seeds(
    preset: QualityPreset, tmp_path: Path
) -> None:
    for run in range(len(preset.train_seeds)):
        cfg = sweep_config(preset, run, tmp_path)
        t, search = cfg.policy.training, cfg.search
        per_iteration = search.num_samples * t.replicas * t.cohort * t.rollout
        assert t.iterations * per_iteration >= preset.train_surgeries
        assert (t.iterations - 1) * per_iteration < preset.train_surgeries  # no more than that
        assert search.num_samples == preset.sweep_members and t.replicas == len(preset.streams)
        workloads = [o.split("=")[1] for s in preset.streams for o in s.overrides[:1]]
        assert t.workloads == workloads and t.imitation == preset.imitation
        assert cfg.policy.name == "emrakul" and cfg.policy.density == preset.densities[0]
        assert cfg.experiment.seed == preset.train_seeds[run]
        assert (t.control, t.credit, t.rollout) == (preset.control, preset.credit, preset.rollout)
        assert set(search.bounds) == {*SEARCH_BOUNDS, "policy.training.learner_params.lr"}
        assert set(search.bounds) <= set(SEARCHABLE)
        low, high = search.bounds["policy.training.learner_params.lr"]
        assert low < preset.learner_params["lr"] < high
        assert cfg.cluster.storage_path == str(tmp_path / f"run{run}")
        seeds = sweep_organism_seeds(preset, run, cfg)
        assert len(set(seeds)) == t.replicas * t.cohort and seeds[0] == preset.train_seeds[run]
        assert not set(seeds) & {*preset.validation_seeds, *preset.seeds}


def test_sweep_presets_are_validated_loudly() -> None:
    with pytest.raises(ValueError, match="unknown trainer 'tune'; valid: in_process, sweep"):
        dataclasses.replace(TINY, trainer="tune")
    assert TRAINERS == ("in_process", "sweep")
    with pytest.raises(ValueError, match=r"ablations \['imitation_only'\] ablate a warm start"):
        dataclasses.replace(TINY, imitation=0, ablations=("imitation_only",))
    dataclasses.replace(TINY, ablations=("imitation_only",))  # the sweep has a warm start
    with pytest.raises(ValueError, match="no no_imitation ablation"):
        dataclasses.replace(TINY, ablations=("no_imitation",))  # it would ablate the trainer too
    with pytest.raises(ValueError, match="sweep_members ≥ 2"):
        dataclasses.replace(TINY, sweep_members=1)
    odd = dataclasses.replace(
        TINY,
        streams=(Stream("k", ("workload=digits_permuted", "policy.surgery_interval=50"), 300),),
    )
    with pytest.raises(ValueError, match="stream 'k': a sweep's replica takes one workload"):
        sweep_overrides(odd, 0, Path("runs"))
    clash = small_seed(7, "replica", 1)  # replica 1's organism seed of a sweep seeded 7
    with pytest.raises(ValueError, match=f"sweep organisms use evaluation seed {clash}"):
        sweep_config(dataclasses.replace(TINY, train_seeds=(7,), seeds=(clash,)), 0, Path("r"))
    quality._check_configs(TINY)  # what run_quality checks before any work
    # several sweep-trained runs: each one's imitation snapshot is a condition, as in process
    runs = dataclasses.replace(TINY, train_seeds=(0, 100))
    labels = {c.label for c in conditions(runs) if c.variant == "imitation_only"}
    assert labels == {"emrakul_imitation_only", "emrakul_imitation_only_run1"}
    assert "emrakul_run1" in {c.label for c in conditions(runs)}
    cold = dataclasses.replace(runs, imitation=0)  # no warm start: no snapshot to evaluate
    assert not [c for c in conditions(cold) if c.variant == "imitation_only"]


def _fake_sweep(preset: QualityPreset, run: int, out_dir: Path, console: Console) -> Any:
    folder = f"{out_dir}/run{run}/emrakul"
    names = {"t_00001": (4, 8), "t_00000": (8,)}  # the best member's curve, the other's latest
    snaps = tuple((s, f"{folder}/{trial}-{s:06d}.pt") for trial, ss in names.items() for s in ss)
    sources = {p: {"trial_id": p.split("/")[-1][:7], "iteration": s // 4,
                   "searched": {"reward.beta": 0.1}} for s, p in snaps}  # fmt: skip
    imitation = f"{folder}/imitation-000000.pt"  # the warm start every member began from
    snaps, sources[imitation] = ((0, imitation), *snaps), {"imitation": True, "trial_id": None}
    members = [{"trial": "t_00001", "fitness": 1.1}, {"trial": "t_00000", "fitness": 0.9}]
    hyper = {"trainer": "sweep", "run_dir": f"{out_dir}/run{run}/sweep", "best_member": "t_00001",
             "members": members}  # fmt: skip
    return TrainedVariant(run, preset.train_seeds[run], "emrakul", folder, snaps, 16, hyper,
                          sources)  # fmt: skip


def test_run_trains_the_full_policy_by_sweep_and_reports_its_members(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder, trained, fitted = _Recorder(), [], []
    for module in (quality, quality_selection):
        monkeypatch.setattr(module, "remote", lambda fn: SimpleNamespace(remote=fn))
        monkeypatch.setattr(
            module, "gather", lambda refs, keys, *_: dict(zip(keys, refs, strict=True))
        )
        monkeypatch.setattr(module, "evaluate_run", recorder.evaluate)
    monkeypatch.setattr(
        quality, "train_variant", lambda p, v, o, r: trained.append(v) or recorder.train(p, v, o, r)
    )
    monkeypatch.setattr(quality, "train_by_sweep", _fake_sweep)
    monkeypatch.setattr(quality, "check_member_fits", lambda cfg: fitted.append(cfg))
    monkeypatch.setattr(quality, "plot_plasticity", lambda report, path: None)
    streams = tuple(Stream(s.name, t.overrides[:1], s.steps)
                    for s, t in zip(FAKE.streams, TINY.streams, strict=True))  # fmt: skip
    preset = dataclasses.replace(FAKE, streams=streams, trainer="sweep", sweep_members=2)
    with (tmp_path / "log.txt").open("w") as log:
        report = quality._run(preset, tmp_path / "q.json", None, str(tmp_path), 0.0,
                              Console(file=log))  # fmt: skip
    assert trained == ["retrained_blind_gradient"] and len(fitted) == 2  # both runs' sweeps
    run0 = report["training"][0]
    full = run0["variants"]["emrakul"]
    assert full["hyperparameters"]["run_dir"].endswith("run0/sweep")
    assert full["hyperparameters"]["best_member"] == "t_00001"
    assert [(c["trial_id"], c["surgeries"]) for c in full["curve"]] == [
        (None, 0), ("t_00001", 4), ("t_00001", 8), ("t_00000", 8)
    ]  # fmt: skip
    assert [c["imitation"] for c in full["curve"]] == [True, False, False, False]
    assert full["imitation_validation"] is not None
    assert full["chosen"]["trial_id"] in ("t_00001", "t_00000")
    assert full["chosen"]["surgeries"] == 8 and full["surgeries_trained"] == 16
    assert run0["variants"]["retrained_blind_gradient"]["hyperparameters"]["control"] == "rigl"
    assert report["chosen"]["imitation_only"].endswith("run0/emrakul/imitation-000000.pt")
    assert all(e["rl_over_imitation"] is not None for e in report["between_runs"]["runs"])
    assert json.loads((tmp_path / "q.json").read_text())["chosen"] == report["chosen"]


@pytest.mark.slow
def test_a_tiny_quality_run_trains_by_sweep_and_records_the_member(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"
    report = run_quality(TINY, out, None, num_cpus=2, storage=str(tmp_path / "runs"))
    (run0,) = report["training"]
    full = run0["variants"]["emrakul"]
    hyper = full["hyperparameters"]
    run_dir = Path(hyper["run_dir"])
    assert run_dir.parent == Path(run0["directory"]) and (run_dir / "tune").is_dir()
    assert json.loads((run_dir / "run.json").read_text())["state"] == "complete"
    assert len(hyper["members"]) == 2 and hyper["best_member"] in {
        m["trial"] for m in hyper["members"]
    }
    assert all(len(m["searched"]) == len(SEARCH_BOUNDS) + 1 for m in hyper["members"])
    assert not set(hyper["organism_seeds"]) & {*TINY.seeds, *TINY.validation_seeds}
    assert full["surgeries_trained"] == 16
    # each member's latest (iterations × replicas × rollout), and the best one's earlier
    # checkpoint unless an exploit replaced its state before Tune kept it
    latest = {(m["trial"], 8) for m in hyper["members"]}
    assert latest <= {(c["trial_id"], c["surgeries"]) for c in full["curve"]}
    earlier = [c for c in full["curve"] if 0 < c["surgeries"] < 8]
    assert all(c["trial_id"] == hyper["best_member"] and c["surgeries"] == 4 for c in earlier)
    assert len(full["curve"]) == 3 + len(earlier)
    assert [c["surgeries"] for c in full["curve"] if c["imitation"]] == [0]  # the warm start
    assert hyper["imitation"] == TINY.imitation
    chosen = full["chosen"]
    assert Path(chosen["path"]).is_file() and report["chosen"]["emrakul"] == chosen["path"]
    assert chosen["trial_id"] in {m["trial"] for m in hyper["members"]}
    assert set(chosen["searched"]) == set(compose_config(
        sweep_overrides(TINY, 0, tmp_path)).search.bounds)  # fmt: skip
    assert {r["seed"] for r in report["runs"]} == {1000}
    suite = {r["policy"] for r in report["results"] if r["stream"] == "suite"}
    assert {"emrakul", "static", "dense"} <= suite
    assert math.isfinite(chosen["validation"])
