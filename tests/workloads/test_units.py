"""Unit re-initialisation (CBP, ReDo): incoming fresh, outgoing zero, optimizer state reset."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from esper.workloads.actions import LayerAction
from esper.workloads.hosts import Host, make_host
from esper.workloads.scalpel import Scalpel
from esper.workloads.units import reset_units, unit_wiring
from tests.workloads.test_organism import _organism


def _trained(host: Host, x: torch.Tensor) -> tuple[Scalpel, torch.optim.Optimizer]:
    """A half-dense Scalpel and an SGD-with-momentum optimizer with state on every weight."""
    scalpel = Scalpel(host, density=0.5, distribution="uniform", seed=0)
    opt = torch.optim.SGD(host.parameters(), lr=0.01, momentum=0.9)
    scalpel.bind_optimizer(opt)
    for _ in range(2):
        opt.zero_grad()
        host(x).pow(2).mean().backward()
        opt.step()
        scalpel.after_step()
    return scalpel, opt


def _momentum(opt: torch.optim.Optimizer, p: torch.Tensor) -> torch.Tensor:
    return opt.state[p]["momentum_buffer"]


def test_mlp_unit_reset_touches_exactly_its_weights() -> None:
    torch.manual_seed(0)
    host = make_host("mlp", (12,), 3, hidden=[8, 6])
    scalpel, opt = _trained(host, torch.randn(5, 12))
    params = dict(host.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    mask = scalpel.mask("layers.0.weight").clone()
    units = torch.tensor([1, 3, 3])
    count = reset_units(
        host, scalpel, opt, "layers.0.weight", units, torch.Generator().manual_seed(1)
    )
    assert count == 2
    w0, w1 = params["layers.0.weight"].detach(), params["layers.1.weight"].detach()
    others = [u for u in range(8) if u not in (1, 3)]
    assert torch.equal(w0[others], before["layers.0.weight"][others])
    rows = w0[[1, 3]]
    assert torch.all(rows[~mask[[1, 3]]] == 0)  # pruned positions stay pruned
    assert torch.all(rows[mask[[1, 3]]] != before["layers.0.weight"][[1, 3]][mask[[1, 3]]])
    assert rows.abs().max() <= 1 / math.sqrt(12)
    assert torch.all(params["layers.0.bias"].detach()[[1, 3]] == 0)
    assert torch.all(w1[:, [1, 3]] == 0)
    keep = [c for c in range(8) if c not in (1, 3)]
    assert torch.equal(w1[:, keep], before["layers.1.weight"][:, keep])
    assert torch.equal(params["layers.2.weight"].detach(), before["layers.2.weight"])
    assert torch.all(_momentum(opt, params["layers.0.weight"])[[1, 3]] == 0)
    assert torch.all(_momentum(opt, params["layers.0.bias"])[[1, 3]] == 0)
    assert torch.all(_momentum(opt, params["layers.1.weight"])[:, [1, 3]] == 0)
    assert _momentum(opt, params["layers.1.weight"])[:, keep].abs().sum() > 0


def test_reset_is_reproducible_from_the_generator() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        host = make_host("mlp", (12,), 3, hidden=[8])
        scalpel, opt = _trained(host, torch.randn(5, 12))
        reset_units(host, scalpel, opt, "layers.0.weight", [2], torch.Generator().manual_seed(7))
        outs.append(host.layers[0].weight.detach().clone())
    assert torch.equal(outs[0], outs[1])


def test_cnn_channels_zero_next_conv_inputs_and_flattened_fc_columns() -> None:
    torch.manual_seed(0)
    host = make_host("cnn", (1, 8, 8), 4, channels=[3, 5], hidden=7)
    scalpel, opt = _trained(host, torch.randn(4, 1, 8, 8))
    gen = torch.Generator().manual_seed(0)
    assert unit_wiring(host, "features.0.weight").consumer == "features.3.weight"
    reset_units(host, scalpel, opt, "features.0.weight", torch.tensor([2]), gen)
    assert torch.all(host.features[3].weight.detach()[:, 2] == 0)
    wiring = unit_wiring(host, "features.3.weight")
    assert (wiring.consumer, wiring.width) == ("fc.weight", 4)  # 5 channels × 2×2 after pooling
    reset_units(host, scalpel, opt, "features.3.weight", torch.tensor([1]), gen)
    fc = host.fc.weight.detach()
    assert torch.all(fc[:, 4:8] == 0) and fc[:, :4].abs().sum() > 0 and fc[:, 8:].abs().sum() > 0
    assert torch.all(_momentum(opt, host.fc.weight)[:, 4:8] == 0)
    reset_units(host, scalpel, opt, "fc.weight", torch.tensor([0, 6]), gen)
    assert torch.all(host.head.weight.detach()[:, [0, 6]] == 0)


def test_transformer_ff1_units_zero_ff2_columns() -> None:
    torch.manual_seed(0)
    host = make_host("transformer", (16,), 3, d_model=8, heads=2, layers=1, ff=12)
    scalpel, opt = _trained(host, torch.randn(4, 16))
    reset_units(host, scalpel, opt, "blocks.0.ff1.weight", [5], torch.Generator())
    assert torch.all(host.blocks[0].ff2.weight.detach()[:, 5] == 0)
    with pytest.raises(ValueError, match="residual stream"):
        reset_units(host, scalpel, opt, "blocks.0.attn.q.weight", [0], torch.Generator())


def test_output_layer_and_bad_units_are_rejected() -> None:
    host = make_host("mlp", (12,), 3, hidden=[8])
    scalpel, opt = _trained(host, torch.randn(5, 12))
    with pytest.raises(ValueError, match="output layer"):
        reset_units(host, scalpel, opt, "layers.1.weight", [0], torch.Generator())
    with pytest.raises(IndexError, match=r"\[0, 8\)"):
        reset_units(host, scalpel, opt, "layers.0.weight", [8], torch.Generator())
    with pytest.raises(TypeError, match="MLP, CNN and TinyTransformer"):
        unit_wiring(nn.Sequential(nn.Linear(2, 2)), "0.weight")
    assert reset_units(host, scalpel, opt, "layers.0.weight", [], torch.Generator()) == 0


def test_organism_reset_units_action_logs_a_reset_event() -> None:
    org = _organism()
    org.reset()
    out = org.step({"layers.0.weight": LayerAction(reset_units=[0, 4])})
    (event,) = [e for e in out.events if e.action == "reset"]
    assert event.layer == "layers.0.weight" and event.value == 2 and event.indices == [0, 4]
