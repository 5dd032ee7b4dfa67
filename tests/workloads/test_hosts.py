"""Host networks: every registry entry on every input shape it supports, addressability."""

from __future__ import annotations

import pytest
import torch

from esper.registry import InvalidParameterError
from esper.workloads import HOSTS, MLP, TinyTransformer, make_host
from esper.workloads.hosts import Host

_SHAPES = {"image": (1, 8, 8), "signal": (1, 40), "vector": (16,)}


@pytest.mark.parametrize("name", HOSTS.names())
@pytest.mark.parametrize("shape", list(_SHAPES))
def test_every_host_on_every_supported_shape(name: str, shape: str) -> None:
    input_shape = _SHAPES[shape]
    if name == "cnn" and shape == "vector":
        with pytest.raises(ValueError, match="use 'mlp'"):
            make_host(name, input_shape, 10)
        return
    model = make_host(name, input_shape, 10)
    out = model(torch.randn(5, *input_shape))
    assert out.shape == (5, 10)
    out.sum().backward()
    prunable = model.prunable_parameters()
    params = dict(model.named_parameters())
    assert prunable, "every host has prunable tensors"
    for full_name, tensor in prunable.items():
        assert params[full_name] is tensor  # addressable by its full parameter name
        assert tensor.dim() >= 2 and tensor.grad is not None


@pytest.mark.parametrize("name", HOSTS.names())
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap of SDPA
def test_stacked_forward_is_each_member_own_forward(name: str, activation: str) -> None:
    input_shape = (1, 8, 8)
    members = [make_host(name, input_shape, 10, activation=activation) for _ in range(3)]
    params = [torch.stack(ts) for ts in zip(*(m.parameters() for m in members), strict=True)]
    x = torch.randn(3, 5, *input_shape)
    stacked = members[0].stacked_forward(params, x)
    assert stacked.shape == (3, 5, 10)
    for i, member in enumerate(members):
        torch.testing.assert_close(stacked[i], member(x[i]), atol=1e-5, rtol=1e-5)
    generic = Host.stacked_forward(members[0], params, x)  # the vmap form MLP overrides
    torch.testing.assert_close(stacked, generic, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", HOSTS.names())
def test_has_buffers_says_whether_the_host_keeps_buffers(name: str) -> None:
    host = make_host(name, (1, 8, 8), 10)
    assert HOSTS[name].has_buffers == bool(list(host.buffers()))


def test_mlp_stacked_forward_refuses_a_wrong_parameter_list() -> None:
    model = MLP((64,), 10, hidden=(32, 16))
    params = [p.unsqueeze(0) for p in model.parameters()]
    with pytest.raises(ValueError, match="5 stacked tensors for 3 layers"):
        model.stacked_forward(params[:5], torch.randn(1, 4, 64))


def test_cnn_uses_2d_convolutions_for_images_and_1d_for_signals() -> None:
    image = make_host("cnn", (1, 8, 8), 10)
    signal = make_host("cnn", (1, 40), 10)
    assert isinstance(image.features[0], torch.nn.Conv2d)
    assert isinstance(signal.features[0], torch.nn.Conv1d)
    assert "features.0.weight" in image.prunable_parameters()


def test_mlp_prunable_names_in_forward_order() -> None:
    model = MLP((64,), 10, hidden=(32, 16))
    assert list(model.prunable_parameters()) == [
        "layers.0.weight",
        "layers.1.weight",
        "layers.2.weight",
    ]


def test_attention_heads_are_addressable_units() -> None:
    torch.manual_seed(0)
    model = TinyTransformer((1, 8, 8), 10, d_model=16, heads=4, layers=1)
    heads = [g for g in model.unit_groups() if g.kind == "head"]
    assert [(g.module, g.count) for g in heads] == [("blocks.0.attn", 4)]
    index = heads[0].index(2)
    assert index["blocks.0.attn.q.weight"] == (0, slice(8, 12))
    assert index["blocks.0.attn.out.weight"] == (1, slice(8, 12))
    params = dict(model.named_parameters())
    assert all(name in params for name in index)
    with pytest.raises(IndexError):
        heads[0].index(4)


def test_zeroing_a_heads_slices_equals_gating_it_off() -> None:
    torch.manual_seed(0)
    model = TinyTransformer((1, 8, 8), 10, d_model=16, heads=4, layers=1)
    x = torch.randn(3, 1, 8, 8)
    group = next(g for g in model.unit_groups() if g.kind == "head")
    attn = model.blocks[0].attn
    attn.head_gate[1] = 0.0
    gated = model(x)
    attn.head_gate[1] = 1.0
    params = dict(model.named_parameters())
    with torch.no_grad():
        _, sl = group.index(1)["blocks.0.attn.v.weight"]
        params["blocks.0.attn.v.weight"][sl] = 0
        params["blocks.0.attn.v.bias"][sl] = 0
    torch.testing.assert_close(model(x), gated)


def test_unknown_host_parameter_is_named() -> None:
    with pytest.raises(
        InvalidParameterError, match="no parameter 'depth'; allowed: hidden, activation"
    ):
        make_host("mlp", (4,), 2, depth=3)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        make_host("mlp", (4,), 2, activation="swish")
