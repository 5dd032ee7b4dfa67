"""Exporting a member's policy: the policy checkpoint acts as the member's learner's policy,
the best member is the leaderboard's, and ``esper export-policy`` refuses bad input by name.
The slow test exports from a real tiny sweep and evaluates the checkpoint with ``esper
evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from esper.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from esper.cli import main
from esper.conf import ConfigError, compose, from_plain
from esper.platform.export import (
    best_member,
    export_member_policy,
    member_checkpoint,
    sweep_members,
)
from esper.platform.population import replica_configs
from esper.platform.runs import create_run
from esper.platform.trainable import CHECKPOINT_FILE, KIND, load_member_checkpoint
from esper.policies.base import make_policy
from esper.policies.checkpoints import KIND as POLICY_KIND
from esper.policies.checkpoints import load_policy
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.learners import LEARNERS
from esper.workloads.factory import build_organism
from tests.platform.conftest import TINY
from tests.platform.test_population import _member
from tests.platform.test_sweep import _SWEEP, _run_dir

_TRIAL = "abcde_00000"
_LEARNER = {"mappo": [], "qmix": ["+policy.training.learner_params.batch_size=2",
                                  "+policy.training.learner_params.buffer_size=64"]}  # fmt: skip
"""Per learner, what a one-iteration member needs (QMIX: a batch of the 6 transitions)."""


def _trial_dir(run: Path, trial: str, index: int) -> Path:
    """Where Tune keeps trial ``trial`` of the sweep ``run`` (its folder's name carries the id)."""
    return run / "tune" / f"MemberTrainable_{trial}_{index}_reward_beta=0.1_2026-01-01_00-00-00"


def _acts(policy: EmrakulPolicy, greedy: bool) -> torch.Tensor:
    """The raw action ``policy`` takes on the first reading of a fixed organism."""
    cfg = compose(TINY)
    organism = build_organism(replica_configs(cfg)[0])
    step = organism.reset()
    policy.greedy = greedy
    policy.reset(organism, step)
    policy.act(organism, step)
    assert policy.last is not None
    return policy.last.raw


@pytest.mark.parametrize(
    "learner",
    [pytest.param(n, marks=pytest.mark.slow) if n != "mappo" else n for n in LEARNERS.names()],
)  # MAPPO in the default suite (a Ray start each), the others with -m slow
def test_an_exported_member_acts_as_its_learners_policy(
    learner: str, tmp_path: Path, ray_cluster: None
) -> None:
    """The exported policy takes the raw action the member's learner's own policy takes on
    the same reading, sampling (the stream restored) and greedy; QMIX's through its Q net."""
    member = _member(tmp_path, f"policy.training.learner={learner}", *_LEARNER[learner],
                     "search.bounds={reward.beta:[0,0.5]}", "reward.beta=0.25",
                     trial=_TRIAL)  # fmt: skip
    try:
        member.step()
        state = member.state_dict()
        run = tmp_path / "run"
        checkpoint = _trial_dir(run, _TRIAL, 0) / "checkpoint_000000"
        save_checkpoint(checkpoint / CHECKPOINT_FILE, KIND, state)
        out = export_member_policy(checkpoint, tmp_path / "policy.pt")
        by_file = export_member_policy(checkpoint / CHECKPOINT_FILE, tmp_path / "by_file.pt")
    finally:
        member.close()
    live = member.learner.policy  # the learner lives in this process
    sampled, greedy = _acts(live, greedy=False), _acts(live, greedy=True)
    exported = load_policy(out, greedy=False)
    assert isinstance(exported, EmrakulPolicy) and not exported.greedy
    assert exported.discrete is (learner == "qmix") and exported.policy_version == 1
    assert torch.equal(_acts(exported, greedy=False), sampled)
    exported = load_policy(out)
    assert isinstance(exported, EmrakulPolicy) and exported.greedy
    assert torch.equal(_acts(exported, greedy=True), greedy)

    payload = load_checkpoint(out, POLICY_KIND)
    cfg = from_plain(state["config"])
    assert payload["learner"]["name"] == learner and len(payload["config"]) == 2
    assert payload["surgeries"] == 1 * 2 * 1 * 3  # iterations × replicas × cohort × rollout
    assert sum(row["surgeries"] for row in payload["history"]) == payload["surgeries"]
    assert [row["iteration"] for row in payload["history"]] == [1]
    provenance = payload["provenance"]
    assert provenance["run_dir"] == str(run.resolve()) and provenance["trial_id"] == _TRIAL
    assert (provenance["iteration"], provenance["policy_version"]) == (1, 1)
    assert provenance["searched"] == {"reward.beta": 0.25} == {"reward.beta": cfg.reward.beta}
    assert provenance["checkpoint"].endswith(f"checkpoint_000000/{CHECKPOINT_FILE}")
    assert provenance["refused"] == [] and provenance["fitness"] is None  # no reference twins
    assert load_checkpoint(by_file, POLICY_KIND)["provenance"] == provenance


# -- finding the member: Tune's results on disk, no Ray ---------------------------------------


def _sweep(tmp_path: Path, curves: dict[str, list[float]], saved: dict[str, int]) -> Path:
    """A sweep's run directory as Tune leaves it: for each trial its results (one ``fitness``
    per iteration, ``online_accuracy`` the reverse) and ``saved[trial]`` checkpoints."""
    run = tmp_path / "sweep"
    create_run(run, compose([*TINY, "search=pbt"]), "sweep", "digits_permuted", "emrakul")
    for index, (trial, fitness) in enumerate(curves.items()):
        folder = _trial_dir(run, trial, index)
        folder.mkdir(parents=True)
        rows = [{"trial_id": trial, "iteration": i + 1, "fitness": f, "online_accuracy": -f,
                 "config": {"reward.beta": 0.1}} for i, f in enumerate(fitness)]  # fmt: skip
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for k in range(saved.get(trial, 0)):
            save_checkpoint(folder / f"checkpoint_{k:06d}" / CHECKPOINT_FILE, KIND, {"k": k})
    return run


def test_the_best_member_is_the_best_by_its_last_result_and_brings_its_latest_checkpoint(
    tmp_path: Path,
) -> None:
    # a: best at first, worst at the end; b: best last; c: never reported; d: best, unsaved
    curves = {"a_00000": [0.9, 0.1], "b_00001": [0.2, 0.5], "c_00002": []}
    run = _sweep(tmp_path, curves, {"a_00000": 2, "b_00001": 3})
    trial, checkpoint = best_member(run)
    assert (trial, checkpoint.name) == ("b_00001", "checkpoint_000002")
    assert best_member(run, mode="min")[0] == "a_00000"
    assert best_member(run, metric="online_accuracy")[0] == "a_00000"
    assert member_checkpoint(run, "a_00000").name == "checkpoint_000001"
    assert sweep_members(run)["c_00002"] is None
    with pytest.raises(CheckpointError, match=r"member c_00002 .* left no checkpoint"):
        member_checkpoint(run, "c_00002")
    with pytest.raises(ConfigError, match=r"'nope' is not a member .* a_00000, b_00001, c_00002"):
        member_checkpoint(run, "nope")
    with pytest.raises(ConfigError, match="finite 'fitnes'; reported: fitness, online_accuracy"):
        best_member(run, metric="fitnes")
    unsaved = _sweep(tmp_path / "u", {"a_00000": [0.1], "d_00001": [0.9]}, {"a_00000": 1})
    with pytest.raises(CheckpointError, match=r"member d_00001 .* left no checkpoint"):
        best_member(unsaved)  # the best is named, never silently the runner-up


def test_a_run_of_one_member_exports_member_t0(tmp_path: Path) -> None:
    run = tmp_path / "run"
    create_run(run, compose(TINY), "run", "digits_permuted", "emrakul")
    with pytest.raises(CheckpointError, match="holds no member checkpoint"):
        best_member(run)
    save_checkpoint(run / CHECKPOINT_FILE, KIND, {"k": 0})
    assert best_member(run) == ("t0", run.resolve()) and sweep_members(run) == {"t0": run.resolve()}
    state, used, _ = load_member_checkpoint(member_checkpoint(run, "t0"))
    assert used == run.resolve() / CHECKPOINT_FILE and state == {"k": 0}


def _export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["export-policy", *args])
    return code, capsys.readouterr().err


def test_export_policy_refuses_bad_input_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "policy.pt"
    run = _sweep(tmp_path, {"a_00000": [0.3], "b_00001": [0.4]}, {})
    code, err = _export(capsys, str(run), "--out", str(out))
    assert code == 2 and f"{run.resolve()} holds no member checkpoint" in err
    save_checkpoint(_trial_dir(run, "a_00000", 0) / "checkpoint_000000" / CHECKPOINT_FILE,
                    KIND, {"k": 0})  # fmt: skip
    code, err = _export(capsys, str(run), "--trial", "zz_00009", "--out", str(out))
    assert code == 2 and "'zz_00009' is not a member" in err and "a_00000, b_00001" in err
    code, err = _export(capsys, str(run), "--trial", "b_00001", "--out", str(out))
    assert code == 2 and "member b_00001" in err and "left no checkpoint" in err
    code, err = _export(capsys, str(run), "--trial", "a_00000", "--out", str(out))
    assert code == 2 and "not a complete member checkpoint: missing 'config'" in err
    code, err = _export(capsys, str(tmp_path / "nowhere"), "--out", str(out))
    assert code == 2 and "nowhere is not a run directory" in err
    assert not out.exists()


# -- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_sweeps_best_member_is_exported_and_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tiny PBT sweep → ``esper export-policy`` → ``load_policy`` → ``esper evaluate``."""
    args = [*_SWEEP, "policy.training.iterations=2", f"cluster.storage_path={tmp_path}"]
    out = subprocess.run([sys.executable, "-m", "esper", "sweep", *args],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = _run_dir(tmp_path, "sweep")
    policy_path = tmp_path / "best.pt"
    out = subprocess.run(
        [sys.executable, "-m", "esper", "export-policy", str(run), "--out", str(policy_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"esper evaluate checkpoint={policy_path}" in out.stdout

    curves = [json.loads(line) for f in (run / "learning").glob("*.jsonl")
              for line in f.read_text().splitlines()]  # fmt: skip
    last = {r["trial"]: r["fitness"] for r in curves if r["iteration"] == 2}
    payload: dict[str, Any] = load_checkpoint(policy_path, POLICY_KIND)
    provenance = payload["provenance"]
    best = max(last.values())  # the leaderboard's best (members of one seed may tie)
    assert last[provenance["trial_id"]] == provenance["fitness"] == pytest.approx(best)
    assert provenance["run_dir"] == str(run) and provenance["iteration"] == 2
    assert payload["surgeries"] == 2 * 1 * 3  # iterations × replicas × cohort × rollout
    (row,) = [r for r in curves if r["iteration"] == 2 and r["trial"] == provenance["trial_id"]]
    searched = {k.removeprefix("hp/"): v for k, v in row.items() if k.startswith("hp/")}
    assert provenance["searched"] == pytest.approx(searched) and len(searched) == 4
    state, _, _ = load_member_checkpoint(Path(provenance["checkpoint"]).parent)
    rebuilt = make_policy("emrakul", **state["learner"]["policy"]["params"])
    assert isinstance(rebuilt, EmrakulPolicy)
    rebuilt.load_state_dict(state["learner"]["policy"])
    exported = load_policy(policy_path)
    assert isinstance(exported, EmrakulPolicy)
    assert torch.equal(_acts(exported, greedy=True), _acts(rebuilt, greedy=True))

    report = tmp_path / "report.json"
    code = main(["evaluate", f"checkpoint={policy_path}", "--surgeries", "3", "--json",
                 str(report), *TINY, f"cluster.storage_path={tmp_path / 'eval'}"])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-2000:]
    (evaluated,) = json.loads(report.read_text())["reports"]
    assert evaluated["policy"] == "emrakul" and evaluated["surgeries"] == 3
