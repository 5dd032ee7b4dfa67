"""train_policy end to end on tiny organisms, checkpoints, and loading a policy back."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from esper.checkpoint import CheckpointError
from esper.conf import compose
from esper.policies.checkpoints import load_policy, save_policy
from esper.policies.emrakul import EmrakulPolicy
from esper.policies.training import train_policy
from esper.workloads.factory import build_organism

_BASE = [
    "policy=emrakul",
    "policy.density=0.2",
    "policy.surgery_interval=3",
    "workload.batch_size=16",
    "workload.host.params.hidden=[16,8]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=2",
]


def test_train_save_load_and_act(tmp_path: Path) -> None:
    cfg = compose([*_BASE, "policy.training.surgeries=8", "policy.training.rollout=4",
                   "experiment.seed=1", "+policy.params.general_interval=2",
                   "policy.training.imitation=2"])  # fmt: skip
    seen: list[dict] = []
    result = train_policy(cfg, progress=seen.append)
    assert [m["episode"] for m in seen] == [-1, 0, 1] and result.history == seen
    assert result.policy.policy_version == 3
    last = seen[-1]
    for key in ("mean_reward", "r_accuracy", "r_flops", "r_oscillation", "r_gsnr", "r_spike"):
        assert math.isfinite(last[key]), key
    assert last["density"] == pytest.approx(0.2, abs=1e-3)
    assert "specialists/policy_loss" in last and "general/value_loss" in last
    path = save_policy(tmp_path / "sub" / "emrakul.pt", result)
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    policy = load_policy(path)
    assert isinstance(policy, EmrakulPolicy) and policy.greedy and policy.policy_version == 3
    original = result.policy
    original.greedy = True
    org = build_organism(cfg)
    step = org.reset()
    policy.reset(org, step)
    original.reset(org, step)
    policy.act(org, step)
    original.act(org, step)
    assert policy.last is not None and original.last is not None
    assert torch.equal(policy.last.raw, original.last.raw)


def test_train_with_qmix_and_several_workloads(tmp_path: Path) -> None:
    qmix = [*_BASE, "policy.training.surgeries=6", "policy.training.rollout=3",
            "policy.training.learner=qmix", "+policy.training.learner_params.batch_size=2",
            "+policy.training.learner_params.buffer_size=64"]  # fmt: skip
    cfg = compose(qmix)
    other = compose([*qmix, "workload=digits_rotated", "workload.host.params.hidden=[16,8]"])
    result = train_policy(cfg, [cfg, other])
    assert [m["workload"] for m in result.history] == [
        "digits/permute_inputs/mlp",
        "digits/rotate/mlp",
    ]
    assert result.policy.discrete
    policy = load_policy(save_policy(tmp_path / "q.pt", result))
    assert isinstance(policy, EmrakulPolicy) and policy.discrete and policy.q_agent is not None
    # the restored Q network acts as the trained one (greedy, on the same reading)
    original = result.policy
    original.greedy = True
    org = build_organism(cfg)
    step = org.reset()
    for p in (policy, original):
        p.reset(org, step)
        p.act(org, step)
    assert policy.last is not None and original.last is not None
    assert torch.equal(policy.last.raw, original.last.raw)
    assert policy.q_agent is not original.q_agent


def test_bad_arguments_and_files(tmp_path: Path) -> None:
    cfg = compose(_BASE)
    cfg.policy.training.learner = "dqn"
    with pytest.raises(ValueError, match="valid learners: mappo, qmix"):
        train_policy(cfg)
    cfg = compose(_BASE)
    cfg.policy.training.surgeries = 0
    with pytest.raises(ValueError, match="surgeries"):
        train_policy(cfg)
    with pytest.raises(ValueError, match="behaviour cloning"):  # refused at composition
        compose([*_BASE, "policy.training.learner=qmix", "policy.training.imitation=2"])
    cfg = compose(_BASE)
    cfg.policy.training.learner, cfg.policy.training.imitation = "qmix", 2
    with pytest.raises(ValueError, match="behaviour cloning"):  # and by the trainer
        train_policy(cfg)
    bogus = tmp_path / "bogus.pt"
    torch.save({"hello": 1}, bogus)
    with pytest.raises(CheckpointError, match="not an Esper checkpoint"):
        load_policy(bogus)


def test_a_diverged_organism_ends_its_episode_and_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from esper.workloads.organism import Organism

    real_step = Organism.step
    calls = {"n": 0}

    def flaky_step(self: Organism, actions: dict, data: object = None) -> object:
        out = real_step(self, actions, data)
        calls["n"] += 1
        if calls["n"] == 2:
            out.info["diverged"] = True
        return out

    monkeypatch.setattr(Organism, "step", flaky_step)
    result = train_policy(
        compose([*_BASE, "policy.training.surgeries=8", "policy.training.rollout=4"])
    )
    first, second, *_ = result.history
    assert first["diverged"] and first["mean_reward"] < 0  # cut after 2 surgeries, penalised
    assert not second["diverged"] and math.isfinite(second["mean_reward"])
    assert calls["n"] == 2 + 4 + 2  # a cut episode uses only its surgeries
