"""Sedation damps exactly one layer's learning rate for exactly the asked number of SGD steps."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from esper.workloads.anesthesia import Sedation

LAYERS = ["0.weight", "1.weight"]
BASE_LR = {"0.weight": 0.1, "1.weight": 0.3}
REST_LR = 0.05


def _optimizer(lr_scale: float = 1.0) -> torch.optim.SGD:
    """One group per layer weight (with its own base rate), one for the biases."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    named = dict(model.named_parameters())
    groups = [{"params": [named[n]], "layer": n, "lr": BASE_LR[n] * lr_scale} for n in LAYERS]
    groups.append({"params": [named["0.bias"], named["1.bias"]], "lr": REST_LR * lr_scale})
    return torch.optim.SGD(groups, lr=1.0, momentum=0.9)


def _lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups]


def _run(sedation: Sedation, steps: int) -> list[list[float]]:
    """Each SGD step's learning rates (set by ``before_step``, as the organism does)."""
    seen = []
    for _ in range(steps):
        sedation.before_step()
        seen.append(_lrs(sedation.optimizer))
    return seen


def test_a_sedated_layer_runs_at_multiplier_times_base_for_exactly_its_steps() -> None:
    optimizer = _optimizer()
    sedation = Sedation(optimizer, LAYERS)
    sedation.sedate("1.weight", 0.25, 3)
    assert _run(sedation, 6) == [[0.1, 0.3 * 0.25, REST_LR]] * 3 + [[0.1, 0.3, REST_LR]] * 3


def test_two_layers_sedate_independently() -> None:
    sedation = Sedation(_optimizer(), LAYERS)
    sedation.sedate("0.weight", 0.5, 1)
    sedation.sedate("1.weight", 0.1, 2)
    assert _run(sedation, 3) == [
        [0.05, 0.3 * 0.1, REST_LR],
        [0.1, 0.3 * 0.1, REST_LR],
        [0.1, 0.3, REST_LR],
    ]


def test_a_new_sedation_replaces_the_one_in_progress() -> None:
    sedation = Sedation(_optimizer(), LAYERS)
    sedation.sedate("0.weight", 0.5, 4)
    first = _run(sedation, 2)
    sedation.sedate("0.weight", 0.2, 1)
    assert [lrs[0] for lrs in first + _run(sedation, 3)] == [0.05, 0.05, 0.1 * 0.2, 0.1, 0.1]


@pytest.mark.parametrize(("multiplier", "steps"), [(0.5, 0), (1.0, 3)])
def test_no_damping_or_no_steps_leaves_the_rate_alone(multiplier: float, steps: int) -> None:
    sedation = Sedation(_optimizer(), LAYERS)
    sedation.sedate("0.weight", multiplier, steps)
    assert _run(sedation, 2) == [[0.1, 0.3, REST_LR]] * 2


def test_state_dict_round_trip_mid_sedation_continues_identically() -> None:
    optimizer = _optimizer()
    sedation = Sedation(optimizer, LAYERS)
    sedation.sedate("0.weight", 0.5, 4)
    sedation.sedate("1.weight", 0.25, 2)
    _run(sedation, 1)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "sedation": sedation.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    # A fresh optimizer built with other rates: the base rates come back from the checkpoint.
    restored_optimizer = _optimizer(lr_scale=7.0)
    restored = Sedation(restored_optimizer, LAYERS)
    restored_optimizer.load_state_dict(state["optimizer"])
    restored.load_state_dict(state["sedation"])
    expected = _run(sedation, 5)
    assert _run(restored, 5) == expected
    assert expected[-1] == [0.1, 0.3, REST_LR]


def test_a_layer_without_its_own_group_is_refused() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"no parameter group for layers \['weight'\].*build_opt"):
        Sedation(optimizer, ["weight"])


def test_sedating_an_unknown_layer_names_the_known_ones() -> None:
    sedation = Sedation(_optimizer(), LAYERS)
    with pytest.raises(KeyError, match=r"'2.weight'.*'0.weight', '1.weight'"):
        sedation.sedate("2.weight", 0.5, 2)


@pytest.mark.parametrize(("multiplier", "steps"), [(1.0, 3), (0.5, 0)])
def test_a_neutral_sedation_wakes_the_layer_at_once(multiplier: float, steps: int) -> None:
    optimizer = _optimizer()
    sedation = Sedation(optimizer, LAYERS)
    sedation.sedate("0.weight", 0.5, 4)
    _run(sedation, 2)
    sedation.sedate("0.weight", multiplier, steps)
    assert _lrs(optimizer) == [0.1, 0.3, REST_LR]
    assert _run(sedation, 3) == [[0.1, 0.3, REST_LR]] * 3
