"""Saving mid-training and restoring into fresh objects continues bit-exactly."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from esper.workloads.hosts import Host
from esper.workloads.scalpel import MECHANISMS, Scalpel, topk_among
from tests.workloads.scalpel._helpers import batch, cut_and_grow, make

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "masked": ("mlp", {}),
    "straight_through": ("mlp", {"regrow_threshold": 0.05}),
    "gumbel_softmax": (
        "mlp",
        {"schedule": "exponential", "schedule_params": {"tau0": 2.0, "rate": 0.1}},
    ),
    "hard_concrete": ("mlp", {"init_log_alpha": 0.5}),
    "gumbel_topk": ("transformer", {"keep": 0.5}),
    "nm": ("mlp", {"gradient": "straight_through", "update_interval": 2}),
    "atm": ("mlp", {"update_interval": 2}),
}


def test_every_mechanism_has_a_checkpoint_case() -> None:
    assert sorted(CASES) == MECHANISMS.names()


def _build(mechanism: str, seed: int) -> tuple[Host, Scalpel, torch.optim.Optimizer, tuple]:
    host, params = CASES[mechanism]
    model, scalpel, shape = make(
        mechanism, host, density=0.5, seed=seed, model_seed=seed, mechanism_params=params
    )
    opt = torch.optim.SGD(
        [*model.parameters(), *scalpel.parameters()], lr=0.1, momentum=0.9, weight_decay=1e-3
    )
    scalpel.bind_optimizer(opt)
    return model, scalpel, opt, shape


def _train(
    model: Host, scalpel: Scalpel, opt: torch.optim.Optimizer, shape: tuple, steps: range
) -> list[float]:
    losses = []
    for step in steps:
        x, y = batch(shape, step)
        opt.zero_grad()
        with scalpel.dense_grads():
            loss = F.cross_entropy(model(x), y) + 1e-3 * scalpel.penalty()
            loss.backward()
        opt.step()
        scalpel.after_step()
        losses.append(loss.item())
        if step % 2:
            cut_and_grow(scalpel, step)
        elif scalpel.mechanism_name != "nm":  # a RigL update reading dense gradients
            for name in scalpel.names:
                mask = scalpel.mask(name)
                weight = model.get_parameter(name).detach()
                scalpel.prune(name, topk_among(weight.abs(), mask, 2, largest=False))
                grow = topk_among(scalpel.dense_grad(name).abs(), ~scalpel.mask(name), 2)
                scalpel.regrow(name, grow, init="small_random")
    return losses


def _policy_actions(scalpel: Scalpel) -> None:
    """Run-time settings a policy changes mid-training; the checkpoint must keep them."""
    mech = scalpel.mechanism
    first, second = scalpel.names[:2]
    if scalpel.mechanism_name == "straight_through":
        mech.set_regrow_threshold(second, 0.02)
    elif scalpel.mechanism_name in ("gumbel_softmax", "hard_concrete"):
        scalpel.set_temperature(first, 0.4)
    elif scalpel.mechanism_name == "gumbel_topk":
        mech.set_k("blocks.0.attn", 3)
        scalpel.set_temperature("blocks.0.attn", 0.3)


def _snapshot(model: Host, scalpel: Scalpel, opt: torch.optim.Optimizer) -> dict[str, Any]:
    return copy.deepcopy(
        {"model": model.state_dict(), "opt": opt.state_dict(), "scalpel": scalpel.state_dict()}
    )


@pytest.mark.parametrize("mechanism", sorted(CASES))
def test_round_trip_continues_bit_exactly(mechanism: str) -> None:
    model, scalpel, opt, shape = _build(mechanism, seed=0)
    _train(model, scalpel, opt, shape, range(0, 4))
    _policy_actions(scalpel)
    saved = _snapshot(model, scalpel, opt)
    expected_losses = _train(model, scalpel, opt, shape, range(4, 8))
    expected = _snapshot(model, scalpel, opt)

    model2, scalpel2, opt2, _ = _build(mechanism, seed=7)  # other init, masks and stream
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    scalpel2.load_state_dict(saved["scalpel"])
    losses = _train(model2, scalpel2, opt2, shape, range(4, 8))
    assert losses == expected_losses
    got = _snapshot(model2, scalpel2, opt2)
    for key, value in expected["model"].items():
        assert torch.equal(got["model"][key], value), key
    for name in scalpel.names:
        assert torch.equal(scalpel2.mask(name), scalpel.mask(name))
    for a, b in zip(scalpel.parameters(), scalpel2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(got["scalpel"]["generator"], expected["scalpel"]["generator"])


def test_restoring_without_the_scalpel_state_diverges() -> None:
    """Control: the Scalpel's state (masks, gates, random stream) is what makes it exact."""
    model, scalpel, opt, shape = _build("gumbel_softmax", seed=0)
    _train(model, scalpel, opt, shape, range(0, 2))
    saved = _snapshot(model, scalpel, opt)
    expected = _train(model, scalpel, opt, shape, range(2, 4))
    model2, scalpel2, opt2, _ = _build("gumbel_softmax", seed=7)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert _train(model2, scalpel2, opt2, shape, range(2, 4)) != expected


def test_loading_a_checkpoint_of_another_mechanism_fails() -> None:
    _, scalpel, _, _ = _build("masked", seed=0)
    _, other, _, _ = _build("straight_through", seed=0)
    with pytest.raises(ValueError, match="mechanism 'masked'"):
        other.load_state_dict(scalpel.state_dict())
