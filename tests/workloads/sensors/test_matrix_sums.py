"""The rank-one sums of a Linear layer fed a matrix, against per-sample gradients formed one by
one: the mean, the Fisher diagonal and the boundary samples' Fisher, with the mean given or
formed, and with boundary samples unique (one gather, two slices) or repeated."""

from __future__ import annotations

import pytest
import torch

from esper.workloads.sensors._per_sample import hooked_sums
from esper.workloads.sensors.capture import LayerCall


@pytest.mark.parametrize("boundary", [None, [1, 4, 6], [2, 2, 5]])
@pytest.mark.parametrize("given_mean", [False, True])
def test_rank_one_sums_match_per_sample_gradients(
    boundary: list[int] | None, given_mean: bool
) -> None:
    g = torch.Generator().manual_seed(0)
    batch, layer = 8, torch.nn.Linear(5, 3)
    a, d = torch.randn(batch, 5, generator=g), torch.randn(batch, 3, generator=g)
    per_sample = torch.einsum("bo,bi->boi", d, a)  # g_b = δ_b a_bᵀ
    chosen = torch.tensor(boundary) if boundary is not None else None
    out = list(torch.full((4, 3, 5), float("nan")).unbind(0))
    scales = (1.0 / batch, 1.0 / len(boundary) if boundary else 1.0)
    mean = per_sample.mean(0) if given_mean else None
    call = LayerCall(a, d, 0)
    hooked_sums(layer, [(call, d)], chosen, batch, out, scales, mean)
    assert torch.allclose(out[0], per_sample.mean(0), atol=1e-6)
    assert torch.allclose(out[1], (per_sample**2).mean(0), atol=1e-5)
    if chosen is not None:
        assert torch.allclose(out[3], (per_sample[chosen] ** 2).mean(0), atol=1e-5)
