"""Per-sample gradient statistics against a naive per-sample loop, on every host family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esper.workloads.hosts import make_host
from esper.workloads.sensors import (
    boundary_samples,
    gradient_statistics,
    margins,
    per_sample_cross_entropy,
)

EPS = 1e-12


def _naive(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]
) -> dict[str, torch.Tensor]:
    """Per-sample gradients, one backward per sample: ``{name: (B, *shape)}``."""
    params = dict(model.named_parameters())
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for b in range(x.shape[0]):
        loss = per_sample_cross_entropy(model(x[b : b + 1]), y[b : b + 1]).sum()
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        for n, g in zip(names, grads, strict=True):
            out[n].append(g)
    return {n: torch.stack(g) for n, g in out.items()}


def _host(kind: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    shapes = {
        "mlp": ((12,), {"hidden": (10, 8)}),
        "cnn1d": ((2, 12), {"channels": (3, 4), "hidden": 6}),
        "cnn2d": ((1, 8, 8), {"channels": (3, 4), "hidden": 6}),
        "transformer": ((20,), {"token_dim": 5, "d_model": 8, "heads": 2, "ff": 12}),
    }
    shape, params = shapes[kind]
    name = {"cnn1d": "cnn", "cnn2d": "cnn"}.get(kind, kind)
    model = make_host(name, shape, 4, **params).double()
    x = torch.randn(9, *shape, dtype=torch.float64)
    y = torch.randint(0, 4, (9,))
    return model, x, y


@pytest.mark.parametrize("kind", ["mlp", "cnn1d", "cnn2d", "transformer"])
@pytest.mark.parametrize("method", ["auto", "func"])
def test_matches_naive_loop(kind: str, method: str) -> None:
    model, x, y = _host(kind)
    names = list(model.prunable_parameters())
    masks = {n: torch.rand(p.shape) < 0.7 for n, p in model.prunable_parameters().items()}
    report = gradient_statistics(
        model,
        x,
        y,
        masks=masks,
        boundary_quantile=0.34,
        method=method,  # type: ignore[arg-type]
    )
    per_sample = _naive(model, x, y, names)
    losses = per_sample_cross_entropy(model(x), y).detach()
    boundary = boundary_samples(model(x).detach(), y, losses, 0.34)
    assert torch.equal(report.boundary, boundary)
    assert len(boundary) == 4
    for n in names:
        g, st, m = per_sample[n], report.layers[n], masks[n]
        mean, fisher = g.mean(0), (g * g).mean(0)
        var = (g - mean).pow(2).mean(0)
        gsnr = mean**2 / var.clamp_min(EPS)
        torch.testing.assert_close(st.mean, mean, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(st.fisher, fisher, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(st.gsnr, gsnr, rtol=1e-5, atol=1e-9)
        assert st.fisher_trace == pytest.approx(float(fisher[m].sum()), rel=1e-5)
        assert st.gsnr_mean == pytest.approx(float(gsnr[m].mean()), rel=1e-5)
        gm = g[:, m]  # (B, active)
        coherence = gm.sum(0).pow(2).sum() / (x.shape[0] * gm.pow(2).sum())
        assert st.coherence == pytest.approx(float(coherence), rel=1e-5)
        gb = g[boundary]
        assert st.contact_fisher is not None
        torch.testing.assert_close(st.contact_fisher, (gb * gb).mean(0), rtol=1e-5, atol=1e-12)


def test_coherence_extremes() -> None:
    """Identical samples are fully coherent; orthogonal gradients give 1/B."""
    lin = nn.Linear(4, 1, bias=False).double()
    model = nn.Sequential(lin)
    x = torch.eye(4, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.float64)

    def mse(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * (out.squeeze(1) - t - 1.0) ** 2

    nn.init.zeros_(lin.weight)
    report = gradient_statistics(model, x, y, loss_fn=mse)
    assert report.layers["0.weight"].coherence == pytest.approx(0.25)
    report = gradient_statistics(model, x[:1].repeat(4, 1), y, loss_fn=mse)
    assert report.layers["0.weight"].coherence == pytest.approx(1.0)


def test_margins_and_boundary() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 2.5], [1.0, 1.1, 0.0]])
    y = torch.tensor([0, 1, 0])
    torch.testing.assert_close(margins(logits, y), torch.tensor([2.0, -0.5, -0.1]))
    idx = boundary_samples(logits, y, torch.zeros(3), 0.5)
    assert idx.tolist() == [1, 2]


def test_leaves_grad_untouched_and_validates() -> None:
    model, x, y = _host("mlp")
    gradient_statistics(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(KeyError, match="unknown tensor"):
        gradient_statistics(model, x, y, masks={"nope": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="one loss per sample"):
        gradient_statistics(model, x, y, loss_fn=lambda o, t: F.cross_entropy(o, t))
