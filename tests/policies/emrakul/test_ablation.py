"""Ablation switches of Emrakul: blind sensor groups and Specialists replaced by RigL's rule or
by random surgery."""

from __future__ import annotations

import pytest
import torch

from esper.conf import compose
from esper.policies.base import make_policy
from esper.policies.emrakul.ablation import RANDOM_RULE, RIGL_RULE, SENSOR_GROUPS, blind_columns
from esper.policies.emrakul.actions import layer_action
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.workloads.factory import build_organism
from tests.organisms import TINY_ORGANISM


def test_blind_columns_pick_each_group_in_observations_and_global_state() -> None:
    names = ["density", "log_gsnr", "topo_3", "L01.log_gsnr", "L01.density", "topo_mean_i"]
    assert blind_columns(names, ["gradient"]).tolist() == [0, 1, 0, 1, 0, 0]
    assert blind_columns(names, ["topology"]).tolist() == [0, 0, 1, 0, 0, 1]
    assert not blind_columns(names, []).any()
    with pytest.raises(KeyError, match="unknown sensor groups \\['eyes'\\]"):
        blind_columns(names, ["eyes"])
    with pytest.raises(KeyError, match="valid: gradient"):
        make_policy("emrakul", blind=["eyes"])


def test_every_group_names_real_features() -> None:
    organism = build_organism(compose(TINY_ORGANISM))
    step = organism.reset()
    obs_names = step.observations[organism.scalpel.names[0]].names
    for group in SENSOR_GROUPS:
        assert blind_columns(obs_names, [group]).any(), group


def _decide(policy: EmrakulPolicy) -> EmrakulPolicy:
    organism = build_organism(compose(TINY_ORGANISM))
    step = organism.reset()
    policy.reset(organism, step)
    policy.decide(organism, step, explore=False)
    return policy


def test_a_blind_policy_sees_zeros_where_the_group_was() -> None:
    policy = _decide(EmrakulPolicy(blind=("gradient", "topology"), seed=0))
    assert policy.last is not None
    organism = build_organism(compose(TINY_ORGANISM))
    names = organism.reset().observations[organism.scalpel.names[0]].names
    cols = blind_columns(names, ["gradient", "topology"])
    assert policy.last.obs[:, cols].eq(0).all() and policy.last.obs[:, ~cols].ne(0).any()


def test_without_specialists_every_layer_follows_rigls_rule() -> None:
    policy = _decide(EmrakulPolicy(specialists=False, seed=0))
    assert policy.last is not None
    assert set(policy.last.actions.values()) == {RIGL_RULE}
    sighted = _decide(EmrakulPolicy(seed=0))
    assert sighted.last is not None and set(sighted.last.actions.values()) != {RIGL_RULE}
    assert torch.equal(policy.last.obs, sighted.last.obs)


def test_random_surgery_replaces_the_specialists_with_a_uniform_choice() -> None:
    policy = _decide(EmrakulPolicy(specialists=False, fixed_rule="random", seed=0))
    assert policy.last is not None and set(policy.last.actions.values()) == {RANDOM_RULE}
    organism = build_organism(compose(TINY_ORGANISM))
    step = organism.reset()
    name = organism.scalpel.names[0]
    weight = dict(organism.host.named_parameters())[name].detach().abs().reshape(-1)
    mask = organism.scalpel.mask(name).reshape(-1)
    drop = len(layer_action(RANDOM_RULE, organism, step, name, torch.Generator()).prune)
    smallest = set(torch.where(mask, weight, torch.inf).argsort()[:drop].tolist())
    prunes = [
        set(layer_action(RANDOM_RULE, organism, step, name, torch.Generator().manual_seed(s))
            .prune.tolist())
        for s in range(3)
    ]  # fmt: skip
    assert drop > 0 and all(p != smallest for p in prunes) and prunes[0] != prunes[1]
    assert all(bool(mask[sorted(p)].all()) for p in prunes)  # only active weights are dropped
    with pytest.raises(ValueError, match="fixed_rule='gmp' is unknown; valid: rigl, random"):
        EmrakulPolicy(specialists=False, fixed_rule="gmp")
