"""Statistics read from the training step's own backward agree with the full sensing pass,
and the step itself is the plain training step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from esper.workloads.hosts import MLP
from esper.workloads.sensors.fused import fused_training_step
from esper.workloads.sensors.gradients import gradient_statistics

_NAMES = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]


def _setup() -> tuple[MLP, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = MLP((20,), 5, hidden=(16, 12))
    x, y = torch.randn(32, 20), torch.randint(0, 5, (32,))
    return model, x, y


def test_fused_statistics_match_the_full_pass_and_the_step_is_a_plain_step() -> None:
    model, x, y = _setup()
    plain = copy.deepcopy(model)
    masks = {n: torch.rand_like(p) < 0.5 for n, p in model.named_parameters() if n in _NAMES}
    full = gradient_statistics(model, x, y, params=_NAMES, masks=masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss, stats = fused_training_step(model, optimizer, x, y, _NAMES, masks=masks)
    for name in _NAMES:
        ours, ref = stats[name], full.layers[name]
        assert torch.allclose(ours.mean, ref.mean, atol=1e-6)
        assert torch.allclose(ours.fisher, ref.fisher, rtol=1e-4, atol=1e-8)
        assert torch.allclose(ours.gsnr, ref.gsnr, rtol=1e-3, atol=1e-6)
        for key in ("fisher_trace", "gsnr_mean", "coherence"):
            assert getattr(ours, key) == pytest.approx(getattr(ref, key), rel=1e-4), key
        assert ours.active == ref.active
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    plain_loss = F.cross_entropy(plain(x), y)
    plain_loss.backward()
    plain_opt.step()
    assert torch.equal(loss, plain_loss.detach())
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_only_linear_weights_on_matrices() -> None:
    model, x, y = _setup()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"layers\.0\.bias: fused statistics cover Linear weights"):
        fused_training_step(model, optimizer, x, y, ["layers.0.bias"])
    tokens = torch.nn.Sequential(torch.nn.Linear(20, 5))  # sees [batch, positions, features]
    optimizer = torch.optim.SGD(tokens.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="need a \\[batch, features\\] input"):
        fused_training_step(tokens, optimizer, x.view(4, 8, 20), y.view(4, 8), ["0.weight"])
