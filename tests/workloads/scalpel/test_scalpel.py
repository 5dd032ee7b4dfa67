"""The surgery API: construction, prune/regrow, optimizer-state reset, squash."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from esper.registry import InvalidParameterError, UnknownNameError
from esper.workloads.hosts import MLP
from esper.workloads.scalpel import (
    MECHANISMS,
    REGROW_INITS,
    HardMask,
    Scalpel,
    StraightThroughMask,
)
from tests.workloads.scalpel._helpers import HOSTS, batch, make


@pytest.mark.parametrize("host", sorted(HOSTS))
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_construction_meets_the_budget_exactly(host: str, distribution: str) -> None:
    model, scalpel, _ = make("masked", host, density=0.2, distribution=distribution)
    params = model.prunable_parameters()
    assert scalpel.names == list(params)
    total = sum(p.numel() for p in params.values())
    kept = sum(int(scalpel.mask(n).sum()) for n in scalpel.names)
    assert kept == round(0.2 * total)
    assert scalpel.global_density() == pytest.approx(kept / total)
    for name, p in params.items():
        mask = scalpel.mask(name)
        assert mask.dtype == torch.bool and mask.shape == p.shape
        assert scalpel.numel(name) == p.numel()
        assert scalpel.density(name) == pytest.approx(float(mask.float().mean()))
        assert torch.count_nonzero(p[~mask]) == 0
    assert scalpel.densities() == {n: scalpel.density(n) for n in scalpel.names}


def test_magnitude_selection_and_keep_dense() -> None:
    _model, scalpel, _ = make(
        "masked", density=0.5, selection="magnitude", keep_dense=["layers.2.weight"]
    )
    assert scalpel.density("layers.2.weight") == 1.0
    torch.manual_seed(0)
    w = MLP((64,), 10, hidden=(32, 16)).layers[0].weight.detach()
    mask = scalpel.mask("layers.0.weight")
    assert w.abs()[mask].min() >= w.abs()[~mask].max()


def test_errors_are_loud() -> None:
    model = MLP((64,), 10, hidden=(32, 16))
    with pytest.raises(UnknownNameError, match="valid mask mechanisms: atm, gumbel_softmax"):
        Scalpel(model, "magic")
    with pytest.raises(InvalidParameterError, match="no parameter 'temperature'"):
        Scalpel(model, "gumbel_softmax", {"temperature": 1.0})
    with pytest.raises(ValueError, match="not the weight of a Linear"):
        Scalpel(model, params={"layers.0.bias": model.layers[0].bias})
    with pytest.raises(ValueError, match="not the name of that parameter"):
        Scalpel(model, params={"layers.1.weight": model.layers[0].weight})
    with pytest.raises(ValueError, match="unknown selection"):
        Scalpel(model, density=0.5, selection="best")
    scalpel = Scalpel(model, density=0.5)
    assert scalpel.mechanism_as(HardMask) is scalpel.mechanism
    with pytest.raises(TypeError, match="not a StraightThroughMask"):
        scalpel.mechanism_as(StraightThroughMask)
    with pytest.raises(KeyError, match="unknown layer 'nope'"):
        scalpel.mask("nope")
    with pytest.raises(IndexError, match=r"\[0, 2048\)"):
        scalpel.prune("layers.0.weight", [2048])
    before = scalpel.mask("layers.0.weight").clone()
    gone = (~before).view(-1).nonzero().view(-1)[:3]
    with pytest.raises(UnknownNameError, match="valid regrowth initialisations"):
        scalpel.regrow("layers.0.weight", gone, init="ones")
    assert torch.equal(scalpel.mask("layers.0.weight"), before)


@pytest.mark.parametrize("mechanism", MECHANISMS.names())
def test_prune_and_regrow_report_changed_counts(mechanism: str) -> None:
    _, scalpel, _ = make(mechanism, density=0.5)
    name = scalpel.names[1]
    kept = scalpel.mask(name).view(-1).nonzero().view(-1)
    pruned = (~scalpel.mask(name)).view(-1).nonzero().view(-1)
    density = scalpel.density(name)
    # 4 kept (one given twice) and 2 already pruned: 4 change state
    request = torch.cat([kept[:4], kept[:1], pruned[:2]])
    assert scalpel.prune(name, request) == 4
    assert scalpel.prune(name, request) == 0
    assert scalpel.density(name) == pytest.approx(density - 4 / scalpel.numel(name))
    assert not scalpel.mask(name).view(-1)[kept[:4]].any()
    assert scalpel.regrow(name, torch.cat([kept[:3], kept[:3], kept[4:6]])) == 3
    assert scalpel.regrow(name, kept[:3]) == 0
    assert scalpel.mask(name).view(-1)[kept[:3]].all()
    assert scalpel.density(name) == pytest.approx(density - 1 / scalpel.numel(name))
    assert scalpel.prune(name, []) == 0


@pytest.mark.parametrize("init", REGROW_INITS.names())
def test_regrowth_initialisations(init: str) -> None:
    model, scalpel, _ = make("straight_through", density=0.5)
    name = "layers.0.weight"
    weight = model.get_parameter(name)
    gone = (~scalpel.mask(name)).view(-1).nonzero().view(-1)[:200]
    hidden = weight.detach().view(-1)[gone].clone()
    assert scalpel.regrow(name, gone, init=init) == 200
    values = weight.detach().view(-1)[gone]
    bound = 1 / math.sqrt(64)
    if init == "zero":
        assert torch.count_nonzero(values) == 0
    elif init == "keep":
        assert torch.equal(values, hidden)
    elif init == "kaiming":
        assert values.abs().max() <= bound and values.std() > bound / 3
    else:
        assert 0 < values.abs().max() < 0.1 * bound


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_surgery_resets_optimizer_state(optim: str) -> None:
    model, scalpel, shape = make("straight_through", density=0.5)
    opt: torch.optim.Optimizer
    if optim == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        keys = ["momentum_buffer"]
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        keys = ["exp_avg", "exp_avg_sq"]
    scalpel.bind_optimizer(opt)
    for step in range(2):
        x, y = batch(shape, step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        scalpel.after_step()
    name = scalpel.names[0]
    state = opt.state[model.get_parameter(name)]
    kept = scalpel.mask(name).view(-1).nonzero().view(-1)
    gone = (~scalpel.mask(name)).view(-1).nonzero().view(-1)
    for key in keys:
        assert torch.count_nonzero(state[key].view(-1)[kept[:10]]) == 10
        assert torch.count_nonzero(state[key].view(-1)[gone[:10]]) == 10  # hidden weights train
    scalpel.prune(name, kept[:10])
    scalpel.regrow(name, gone[:10])
    untouched = kept[10:20]
    for key in keys:
        assert torch.count_nonzero(state[key].view(-1)[kept[:10]]) == 0
        assert torch.count_nonzero(state[key].view(-1)[gone[:10]]) == 0
        assert torch.count_nonzero(state[key].view(-1)[untouched]) == 10
    if optim == "adam":
        assert float(state["step"]) == 2.0


def test_reset_can_be_disabled_and_bind_zeroes_pruned_state() -> None:
    model, scalpel, shape = make("masked", density=1.0, reset_optimizer_state=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scalpel.bind_optimizer(opt)
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    name = scalpel.names[0]
    buf = opt.state[model.get_parameter(name)]["momentum_buffer"]
    scalpel.prune(name, [0, 1, 2])
    assert torch.count_nonzero(buf.view(-1)[:3]) == 3
    # a fresh Scalpel bound to an optimizer with dense state clears it at pruned weights
    fresh = Scalpel(model, density=0.5, seed=3)
    fresh.bind_optimizer(opt)
    assert torch.count_nonzero(buf[~fresh.mask(name)]) == 0


def test_gate_parameters_state_is_reset_on_regrowth() -> None:
    model, scalpel, shape = make("gumbel_softmax", density=0.5)
    opt = torch.optim.Adam([*model.parameters(), *scalpel.parameters()], lr=0.01)
    scalpel.bind_optimizer(opt)
    x, y = batch(shape, 0)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    name = scalpel.names[0]
    logits = scalpel.parameters()[0]
    gone = (~scalpel.mask(name)).view(-1).nonzero().view(-1)[:5]
    with torch.no_grad():
        logits.view(-1)[gone] = -4.0
    scalpel.regrow(name, gone)
    assert torch.equal(logits.detach().view(-1)[gone], torch.full((5,), 3.0))
    assert torch.count_nonzero(opt.state[logits]["exp_avg"].view(-1)[gone]) == 0


@pytest.mark.parametrize("mechanism", MECHANISMS.names())
def test_squash_bakes_the_inference_weights(mechanism: str) -> None:
    model, scalpel, shape = make(mechanism, "transformer", density=0.5)
    model.eval()
    x, _ = batch(shape, 0)
    with torch.no_grad():
        expected = model(x)
    masks = scalpel.effective_masks()
    scalpel.squash()
    with torch.no_grad():
        out = model(x)
    if mechanism == "gumbel_topk":  # dropped heads stay gated by head_gate
        assert torch.equal(out, expected)
    else:
        torch.testing.assert_close(out, expected)
    for name, mask in masks.items():
        assert torch.count_nonzero(model.get_parameter(name)[~mask]) == 0
    assert not any("forward" in vars(m) for m in model.modules())
