"""Hutchinson estimates against the exact Hessian of a small model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian
from torch.nn.attention import SDPBackend, sdpa_kernel

from esper.seeding import generator
from esper.workloads.hosts import make_host
from esper.workloads.sensors import (
    hessian_vector_product,
    hutchinson,
    per_sample_cross_entropy,
    rademacher,
)


def _small() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = make_host("mlp", (6,), 3, hidden=(5,), activation="tanh").double()
    x = torch.randn(32, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    return model, x, y


def _exact_blocks(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    names = list(model.prunable_parameters())
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return per_sample_cross_entropy(functional_call(model, p, (x,)), y).mean()

    h = hessian(loss)(params)
    return {n: h[n][n].reshape(params[n].numel(), params[n].numel()) for n in names}


def test_rademacher_is_balanced_and_seeded() -> None:
    v = rademacher(100_003, generator(0, "t"))
    assert set(v.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(v.mean())) < 0.02
    assert torch.equal(v, rademacher(100_003, generator(0, "t")))


@pytest.mark.parametrize("method", ["forward_ad", "func"])
def test_hvp_matches_double_backward(method: str) -> None:
    model, x, y = _small()
    params = model.prunable_parameters()
    vs = {n: torch.randn_like(p) for n, p in params.items()}
    loss = per_sample_cross_entropy(model(x), y).mean()
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    ref = torch.autograd.grad(grads, list(params.values()), list(vs.values()))
    got = hessian_vector_product(model, x, y, vs, method=method)  # type: ignore[arg-type]
    for n, r in zip(params, ref, strict=True):
        torch.testing.assert_close(got[n], r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("kind", "shape", "names"),
    [
        ("transformer", (12,), ["embed.weight", "blocks.0.attn.q.weight", "blocks.1.ff2.weight"]),
        ("transformer", (12,), ["blocks.0.attn.v.weight"]),  # a middle layer alone
        ("cnn", (1, 6, 6), ["features.0.weight", "fc.weight", "head.weight"]),
    ],
)
def test_hvp_other_hosts_and_partial_probes(  # against double backward
    kind: str, shape: tuple[int, ...], names: list[str]
) -> None:
    torch.manual_seed(0)
    extra = {"token_dim": 4, "d_model": 8, "heads": 2, "ff": 8} if kind == "transformer" else {}
    model = make_host(kind, shape, 3, **extra).double()
    x, y = torch.randn(5, *shape, dtype=torch.float64), torch.randint(0, 3, (5,))
    params = dict(model.named_parameters())
    vs = {n: torch.randn_like(params[n]) for n in names}
    a = hessian_vector_product(model, x, y, vs)
    b = hessian_vector_product(model, x, y, vs, method="func")
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention has no double backward
        loss = per_sample_cross_entropy(model(x), y).mean()
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
        ref = torch.autograd.grad(grads, [params[n] for n in names], list(vs.values()))
    for n, r in zip(names, ref, strict=True):
        torch.testing.assert_close(a[n], r, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(b[n], r, rtol=1e-9, atol=1e-12)


def test_hutchinson_methods_agree() -> None:
    model, x, y = _small()
    a = hutchinson(model, x, y, probes=3, generator=generator(0, "h"))
    b = hutchinson(model, x, y, probes=3, generator=generator(0, "h"), method="func")
    for n in a:
        torch.testing.assert_close(a[n].diagonal, b[n].diagonal, rtol=1e-9, atol=1e-12)
        assert a[n].trace == pytest.approx(b[n].trace, rel=1e-9)


def test_hutchinson_trace_and_diagonal() -> None:
    model, x, y = _small()
    exact = _exact_blocks(model, x, y)
    est = hutchinson(model, x, y, probes=3000, generator=generator(0, "hutchinson"), method="func")
    for n, block in exact.items():
        true_trace = float(block.detach().trace())
        assert est[n].trace == pytest.approx(true_trace, rel=0.1)
        diag = est[n].diagonal.flatten()
        corr = torch.corrcoef(torch.stack([diag, block.diagonal()]))[0, 1]
        assert corr > 0.9
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    masked = hutchinson(
        model, x, y, params=["layers.0.weight"], masks={"layers.0.weight": masks["layers.0.weight"]}
    )
    assert masked["layers.0.weight"].trace == 0.0


def test_per_layer_probes_remove_the_cross_layer_variance() -> None:
    model, x, y = _small()
    exact = {n: float(b.trace()) for n, b in _exact_blocks(model, x, y).items()}
    shared: dict[str, list[float]] = {n: [] for n in exact}
    own: dict[str, list[float]] = {n: [] for n in exact}
    g_shared, g_own = generator(0, "shared"), generator(0, "own")
    for _ in range(150):
        for n, h in hutchinson(model, x, y, generator=g_shared).items():
            shared[n].append(h.trace)
        for n, h in hutchinson(model, x, y, generator=g_own, per_layer=True).items():
            own[n].append(h.trace)
    for n, true in exact.items():
        a, b = torch.tensor(shared[n]), torch.tensor(own[n])
        se = float(b.std()) / len(b) ** 0.5
        assert abs(float(b.mean()) - true) < 4 * se  # still unbiased
        assert float(b.var()) < float(a.var())  # the cross-layer terms are gone
