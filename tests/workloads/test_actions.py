"""LayerAction: every field is range-checked with a message naming it, and an organism applies a
surgery's actions only when all of them are valid."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch

from esper.workloads.actions import InvalidActionError, LayerAction
from esper.workloads.organism import Organism
from tests.workloads.test_organism import _organism

_NAN, _INF = float("nan"), float("inf")
_SMALL = (
    "workload=gaussian_covariate",
    "policy.surgery_interval=2",
    "workload.organism.spike_window=1",
)
"""A tiny organism on a synthetic stream (building it imports no scikit-learn)."""

BAD_FIELDS: list[tuple[str, Any]] = [
    ("sedation", 0.0),
    ("sedation", 5.0),
    ("sedation", -1.0),
    ("sedation", _NAN),
    ("sedation_steps", -1),
    ("sedation_steps", 1.5),
    ("sedation_steps", _NAN),
    ("sedation_steps", _INF),
    ("tau", 0.0),
    ("tau", -1.0),
    ("tau", _NAN),
    ("tau", _INF),
    ("tau_factor", 0.0),
    ("tau_factor", _NAN),
    ("target_density", -0.1),
    ("target_density", 1.5),
    ("target_density", _NAN),
    ("regrow_init", "no_such_init"),
    ("forget_shrink", 1.5),
    ("forget_shrink", -0.1),
    ("forget_shrink", _NAN),
    ("forget_perturb", 2.0),
    ("forget_perturb", _NAN),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_a_bad_field_is_refused_at_construction_naming_it(field: str, value: Any) -> None:
    with pytest.raises(InvalidActionError, match=rf"^LayerAction: {field}="):
        LayerAction(**{field: value})


def test_a_pin_and_a_heat_of_the_temperature_are_refused_together() -> None:
    with pytest.raises(InvalidActionError, match=r"tau=0.5 pins .* tau_factor=2.0 heats"):
        LayerAction(tau=0.5, tau_factor=2.0)


def test_an_unknown_regrow_init_lists_the_valid_ones() -> None:
    with pytest.raises(InvalidActionError, match=r"valid: .*\bzero\b"):
        LayerAction(regrow_init="no_such_init")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"sedation": 1.0, "sedation_steps": 0},
        {"sedation": 1e-3, "sedation_steps": 7},
        {"sedation_steps": 2.0},
        {"tau": 1e-6},
        {"target_density": 0.0},
        {"target_density": 1.0},
        {"regrow_init": "zero"},
        {"forget_shrink": 0.0, "forget_perturb": 1.0},
        {"forget_shrink": 1.0, "forget_perturb": 0.0},
    ],
)
def test_values_at_the_edges_of_each_range_are_accepted(kwargs: dict[str, Any]) -> None:
    LayerAction(**kwargs).validate("layers.0.weight", 10, 5)


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_mutation_after_construction_is_caught_by_validate_naming_layer_and_field(
    field: str, value: Any
) -> None:
    action = LayerAction()
    setattr(action, field, value)
    with pytest.raises(InvalidActionError, match=rf"^LayerAction for 'layers.1.weight': {field}="):
        action.validate("layers.1.weight", 10, 5)


@pytest.mark.parametrize("field", ["prune", "regrow"])
@pytest.mark.parametrize("indices", [[0, 10], [-1, 3], torch.tensor([[2], [11]])])
def test_indices_outside_the_tensor_are_refused(field: str, indices: Any) -> None:
    action = LayerAction(**{field: indices})
    with pytest.raises(
        InvalidActionError, match=rf"'layers.0.weight': {field} indices .*\[0, 10\)"
    ):
        action.validate("layers.0.weight", 10, 5)


@pytest.mark.parametrize("field", ["prune", "regrow"])
def test_indices_on_the_first_and_last_weight_are_accepted(field: str) -> None:
    LayerAction(**{field: torch.tensor([0, 9])}).validate("layers.0.weight", 10, 5)


def test_negative_units_are_refused() -> None:
    with pytest.raises(
        InvalidActionError, match=r"'layers.0.weight': reset_units indices must lie in \[0, 5\)"
    ):
        LayerAction(reset_units=[2, -1]).validate("layers.0.weight", 10, 5)


def _assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Recursive exact equality of two state dicts (NaN equals NaN)."""
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=path)
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def _valid_surgery(org: Organism, name: str) -> LayerAction:
    mask = org.scalpel.mask(name).view(-1)
    active, inactive = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
    return LayerAction(
        prune=active[:4], regrow=inactive[:4], sedation=0.5, sedation_steps=3, target_density=0.3
    )


@pytest.mark.parametrize(
    "bad",
    [
        LayerAction(prune=[10**6]),
        LayerAction(regrow=[-1]),
        LayerAction(reset_units=[-2]),
    ],
    ids=["prune", "regrow", "reset_units"],
)
def test_one_invalid_action_makes_the_organism_change_nothing(bad: LayerAction) -> None:
    org = _organism(*_SMALL)
    org.reset()
    first, second = org.scalpel.names[:2]
    before = org.state_dict()
    masks = {n: org.scalpel.mask(n).clone() for n in org.scalpel.names}
    lrs = [g["lr"] for g in org.optimizer.param_groups]
    with pytest.raises(InvalidActionError, match=re.escape(repr(second))):
        org.step({first: _valid_surgery(org, first), second: bad})
    assert all(torch.equal(org.scalpel.mask(n), m) for n, m in masks.items())
    assert (org.sgd_step, org.surgery_step) == (before["sgd_step"], before["surgery_step"])
    assert [g["lr"] for g in org.optimizer.param_groups] == lrs
    _assert_same(org.state_dict(), before)
    # the valid action alone goes through, so the refusal was the invalid one's doing
    out = org.step({first: _valid_surgery(org, first)})
    assert out.info["surgery_step"] == 1
    assert {e.action for e in out.events if e.layer == first} >= {"prune", "regrow", "sedate"}


def test_units_past_the_last_row_make_the_organism_change_nothing() -> None:
    org = _organism(*_SMALL)
    org.reset()
    first, second = org.scalpel.names[:2]
    before = org.state_dict()
    with pytest.raises(InvalidActionError, match=re.escape(repr(second))):
        org.step({first: _valid_surgery(org, first), second: LayerAction(reset_units=[10**6])})
    _assert_same(org.state_dict(), before)


def test_units_past_the_last_row_and_float_indices_are_refused() -> None:
    with pytest.raises(InvalidActionError, match=r"reset_units indices must lie in \[0, 5\)"):
        LayerAction(reset_units=[4, 5]).validate("layers.0.weight", 10, 5)
    with pytest.raises(InvalidActionError, match="prune must hold integer indices"):
        LayerAction(prune=torch.tensor([2.7])).validate("layers.0.weight", 10, 5)
