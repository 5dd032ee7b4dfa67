"""Config composition: every option of every group composes and builds, and a bad override is
refused naming the key and the allowed values."""

from __future__ import annotations

import math

import pytest
import torch

from esper.conf import (
    GROUPS,
    ConfigError,
    chosen_option,
    compose,
    compose_dictconfig,
    options,
    to_yaml,
)
from esper.workloads.factory import build_host, build_optimizer, build_stream
from esper.workloads.prequential import prequential_step

_ALL_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]


@pytest.mark.parametrize(("group", "option"), _ALL_OPTIONS)
def test_every_option_of_every_group_composes(group: str, option: str) -> None:
    cfg = compose([f"{group}={option}"])
    assert getattr(cfg, group) is not None
    assert f"{group}:" in to_yaml(compose_dictconfig([f"{group}={option}"]))


@pytest.mark.parametrize("workload", options("workload"))
def test_every_workload_builds_and_trains_a_step(workload: str) -> None:
    overrides = [f"workload={workload}"]
    if workload.startswith("mnist1d"):
        overrides.append("workload.dataset.params.num_samples=300")
    cfg = compose(overrides)
    stream = build_stream(cfg.workload, seed=0)
    model = build_host(cfg.workload, stream, seed=0)
    optimizer = build_optimizer(cfg.workload, model)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(2):
        record = prequential_step(model, optimizer, stream.next_batch(), stream.source.kind)
        assert math.isfinite(record.loss)  # neither NaN nor ±inf
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_host_initialisation_is_seeded() -> None:
    cfg = compose([])
    stream = build_stream(cfg.workload, 0)
    a, b, c = (
        build_host(cfg.workload, stream, 1),
        build_host(cfg.workload, stream, 1),
        build_host(cfg.workload, stream, 2),
    )
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["workload=__nope__"], "unknown workload '__nope__'; valid workloads: acrobot_permuted"),
        (["search=hyperband"], "valid searchs: grid, none, optuna, pb2, pbt, random"),
        (
            ["workload.foo=1"],
            "unknown key 'workload.foo'; valid keys under 'workload': dataset, drifts",
        ),
        (["nonsense=1"], "unknown key 'nonsense'; valid keys at the top level: workload"),
        (["workload.batch_size=abc"], "invalid value 'abc' for 'workload.batch_size'"),
        (["workload.optimizer=rmsprop"], "expected one of [sgd, adam, upgd]"),
        (
            ["workload.host.name=resnet"],
            "unknown host 'resnet' at workload.host.name; valid hosts: cnn, mlp, transformer",
        ),
        (["workload.dataset.name=cifar"], "valid datasets: acrobot, cartpole, digits"),
        (["workload.drifts=[{name: melt}]"], "unknown drift 'melt' at workload.drifts[0].name"),
        (
            ["workload.host.params.depth=3"],
            "unknown parameter workload.host.params.depth for host 'mlp'; allowed: hidden",
        ),
        (["workload.schedule.params.speed=3"], "allowed: task_length"),
        (["workload.batch_size=0"], "workload.batch_size must be ≥ 1"),
        (["policy.density=1.5"], "policy.density must be in (0, 1]"),
        (["experiment.seed"], "not of the form KEY=VALUE"),
        (["workload.scalpel.mechanism.name=laser"], "unknown mask mechanism 'laser'"),
        (["workload.scalpel.mechanism.params.sharpness=2"], "allowed: reapply"),
        (["workload.scalpel.distribution=gaussian"], "valid: erk, uniform"),
        (["workload.organism.sensors.eyes=2"], "unknown key workload.organism.sensors.eyes"),
        # what a cohort cannot batch, refused by key before any actor starts
        (["policy.training.cohort=2", "workload.optimizer=adam"], "needs workload.optimizer=sgd"),
        (
            ["policy.training.cohort=2", "workload.scalpel.mechanism.name=straight_through"],
            "needs workload.scalpel.mechanism.name=masked, got 'straight_through'",
        ),
        (
            ["policy.training.cohort=2", "workload.scalpel.penalty_weight=0.1"],
            "needs workload.scalpel.penalty_weight=0.0",
        ),
        (["policy.training.cohort=2", "workload.memory.capacity=50"], "memory.capacity=0"),
        (
            ["policy.training.cohort=2", "workload=cartpole_drifting", "workload.optimizer=sgd"],
            "workload.dataset=cartpole is an agent acting with its host",
        ),
        (["policy.training.cohort=2", "workload.host.name=transformer"], "keeps buffers"),
        (  # the replicas' own workloads too
            [
                "policy.training.cohort=2",
                "policy.training.workloads=[digits_permuted,acrobot_permuted]",
            ],
            "policy.training.workloads[1]=acrobot_permuted: policy.training.cohort=2",
        ),
    ],
)
def test_bad_overrides_name_the_key_and_the_allowed_values(
    overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        compose(overrides)
    assert message in str(err.value)


def test_params_dicts_accept_new_keys_without_plus() -> None:
    cfg = compose(
        [
            "workload.host.params.hidden=[7,5]",
            "workload.schedule.params.task_length=9",
            "workload.organism.sensors.hutchinson_probes=2",
        ]
    )
    assert cfg.workload.host.params == {"hidden": [7, 5]}
    assert cfg.workload.organism.sensors == {"hutchinson_probes": 2}
    assert cfg.workload.schedule.params == {"task_length": 9}


def test_chosen_option_defaults_and_overrides() -> None:
    assert chosen_option("workload", []) == "digits_permuted"
    assert (
        chosen_option("workload", ["workload=mnist1d_permuted", "experiment.seed=2"])
        == "mnist1d_permuted"
    )
    with pytest.raises(ConfigError, match="valid groups"):
        chosen_option("host", [])
