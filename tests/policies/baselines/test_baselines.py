"""Every heuristic baseline builds from the registry, runs on a small organism and checkpoints.

Also home of the small-organism helpers the other ``tests.policies.baselines`` modules share.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from esper.policies.base import POLICIES, Policy, make_policy
from esper.policies.baselines import BASELINES
from esper.registry import InvalidParameterError
from esper.workloads.organism import Organism, OrganismStep
from tests.workloads.test_organism import _organism

# Settings that make every baseline act within two surgeries of K = 6 SGD steps.
SMALL: dict[str, dict[str, Any]] = {
    "cbp": {"replacement_rate": 0.05, "maturity_threshold": 5},
    "dense": {},
    "gmp": {"frequency": 6, "steps": 4},
    "random": {"delta_t": 6},
    "redo": {"interval": 6},
    "rigl": {"delta_t": 6, "t_end": 60},
    "rigl_elastic": {"delta_t": 6, "t_end": 60},
    "set": {"delta_t": 6},
    "static": {"density": 0.1},
    "fgsf": {"density": 0.1, "fraction": 0.05},
    "periodic_reset": {"interval": 6},
    "shrink_perturb": {"interval": 6},
    "swr": {"interval": 6, "factor": 0.5},
}


def started(name: str, *overrides: str, **params: Any) -> tuple[Organism, Policy, OrganismStep]:
    """A small organism (MLP [32, 16], batch 16, K = 6) after ``reset``, and the policy reset."""
    org = _organism(*overrides)
    policy = make_policy(name, **params)
    first = org.reset()
    policy.reset(org, first)
    return org, policy, first


def test_the_registry_holds_exactly_the_baselines() -> None:
    assert set(BASELINES) <= set(POLICIES.names())
    assert set(SMALL) == set(BASELINES)


@pytest.mark.parametrize("name", [n for n in POLICIES.names() if n in BASELINES])
def test_every_baseline_runs_two_surgeries_and_checkpoints(name: str) -> None:
    org, policy, step = started(name, **SMALL[name])
    acted = False
    for _ in range(2):
        actions = policy.act(org, step)
        acted = acted or bool(actions)
        step = org.step(actions)
        policy.observe(org, step)
        assert not step.info["diverged"]
    assert acted == (name not in ("dense",))
    clone = make_policy(name, **SMALL[name])
    clone.reset(org, step)
    clone.load_state_dict(policy.state_dict())
    state, restored = policy.state_dict(), clone.state_dict()
    assert state.keys() == restored.keys()
    # Both continue identically from the same organism state.
    snapshot = org.state_dict()
    first = policy.act(org, step)
    org.load_state_dict(snapshot)
    second = clone.act(org, step)
    assert first.keys() == second.keys()
    for layer, action in first.items():
        for field in ("prune", "regrow", "reset_units", "forget"):
            a = torch.as_tensor(getattr(action, field), dtype=torch.int64)
            b = torch.as_tensor(getattr(second[layer], field), dtype=torch.int64)
            assert torch.equal(a.sort().values, b.sort().values), (layer, field)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rigl", {"alpha": 1.5}, "alpha"),
        ("rigl", {"t_end": 0}, "t_end"),
        ("rigl", {"delta_t": 0}, "period"),
        ("rigl", {"regrow_init": "ones"}, "valid: "),
        ("set", {"zeta": -0.1}, "drop fraction"),
        ("random", {"fraction": 2.0}, "drop fraction"),
        ("gmp", {"final_density": 1.0}, "final_density"),
        ("gmp", {"frequency": 0}, "frequency"),
        ("static", {"density": 0.0}, "density"),
        ("static", {"distribution": "normal"}, "erk"),
        ("cbp", {"replacement_rate": 2.0}, "replacement_rate"),
        ("cbp", {"decay_rate": 1.0}, "decay_rate"),
        ("cbp", {"maturity_threshold": -1}, "maturity_threshold"),
        ("redo", {"threshold": -0.5}, "threshold"),
        ("redo", {"interval": 0}, "period"),
        ("shrink_perturb", {"shrink": 1.5}, "shrink"),
        ("swr", {"factor": -1.0}, "factor"),
    ],
)
def test_constructors_reject_bad_hyperparameters(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy(name, **params)


def test_unknown_parameters_are_rejected_by_name() -> None:
    with pytest.raises(InvalidParameterError, match="allowed: alpha, delta_t"):
        make_policy("rigl", beta=0.3)
