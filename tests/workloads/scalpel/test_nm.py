"""N:M patterns and 2:4 semi-structured export."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from esper.workloads.hosts import MLP
from esper.workloads.scalpel import (
    Scalpel,
    export_semi_structured,
    nm_mask,
    nm_valid,
    nm_violations,
    semi_structured_available,
)
from tests.workloads.scalpel._helpers import batch, make

PATTERNS = [(1, 4), (2, 4), (2, 8), (4, 8), (4, 4)]


@pytest.mark.parametrize(("n", "m"), PATTERNS)
@pytest.mark.parametrize("shape", [(8, 16), (4, 8, 3, 1), (6, 24)])
def test_nm_mask_keeps_exactly_n_best_per_block(n: int, m: int, shape: tuple[int, ...]) -> None:
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(n * 10 + m)).abs()
    mask = nm_mask(scores, n, m)
    blocks = mask.reshape(-1, m)
    assert (blocks.sum(1) == n).all()
    assert nm_valid(mask, n, m) and nm_violations(mask, n, m) == 0
    # the survivors are the n largest of each block
    score_blocks = scores.reshape(-1, m)
    low_kept = torch.where(blocks, score_blocks, torch.inf).min(1).values
    high_dropped = torch.where(blocks, -torch.inf, score_blocks).max(1).values
    assert (low_kept >= high_dropped).all()
    # one extra weight in one block breaks validity, unless N = M
    broken = mask.clone().reshape(-1, m)
    broken[0] = True
    assert nm_valid(broken.reshape(shape), n, m) == (n == m)
    assert nm_violations(broken.reshape(shape), n, m) == (0 if n == m else 1)


def test_nm_validity_of_weights_and_bad_arguments() -> None:
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    assert nm_valid(w, 2, 4) and not nm_valid(w, 1, 4)
    assert not nm_valid(torch.ones(2, 6), 2, 4)  # rows of 6 do not tile by 4
    with pytest.raises(ValueError, match="not a multiple of M=4"):
        nm_mask(torch.ones(2, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < N ≤ M"):
        nm_mask(torch.ones(2, 8), 5, 4)


def test_nm_mechanism_stays_valid_and_refuses_bad_regrowth() -> None:
    _model, scalpel, _shape = make("nm", "cnn", mechanism_params={"n": 2, "m": 4})
    mech = scalpel.mechanism
    assert mech.dense_layers == ["features.0.weight"]  # 1·3·3 = 9 inputs per row
    for name in scalpel.names:
        if name not in mech.dense_layers:
            assert nm_valid(scalpel.mask(name), 2, 4) and scalpel.density(name) == 0.5
    name = scalpel.names[1]
    kept = scalpel.mask(name).view(-1).nonzero().view(-1)
    assert scalpel.prune(name, kept[:2]) == 2
    assert nm_valid(scalpel.mask(name), 2, 4)
    full_block = (~scalpel.mask(name).view(-1, 4)[5:]).nonzero()[0]
    bad = (5 + full_block[0]) * 4 + full_block[1]
    before = scalpel.mask(name).clone()
    with pytest.raises(ValueError, match="more than 2 of 4"):
        scalpel.regrow(name, [int(bad)])
    assert torch.equal(scalpel.mask(name), before)
    assert scalpel.regrow(name, kept[:1]) == 1
    with pytest.raises(ValueError, match="fixes the density"):
        Scalpel(MLP((64,), 10), "nm", density=0.3)


def test_nm_straight_through_repicks_and_stays_valid() -> None:
    model, scalpel, shape = make(
        "nm", mechanism_params={"gradient": "straight_through", "update_interval": 1}
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    scalpel.bind_optimizer(opt)
    changed = 0
    for step in range(5):
        x, y = batch(shape, step)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        for change in scalpel.after_step():
            assert change.pruned.numel() == change.regrown.numel()
            changed += change.pruned.numel()
        for name in scalpel.names:
            assert nm_valid(scalpel.mask(name), 2, 4)
            weight = model.get_parameter(name)
            assert torch.equal(scalpel.mask(name), nm_mask(weight.detach().abs(), 2, 4))
    assert changed > 0


def test_export_semi_structured_needs_cuda() -> None:
    linear = nn.Linear(16, 8)
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight.abs(), 2, 4))
    if not semi_structured_available():
        with pytest.raises(RuntimeError, match=r"compute capability ≥ 8\.0"):
            export_semi_structured(linear)


def test_export_semi_structured_on_cuda() -> None:
    if not semi_structured_available():
        pytest.skip("2:4 semi-structured kernels need a CUDA GPU with compute capability ≥ 8.0")
    linear = nn.Linear(128, 128).to("cuda", torch.bfloat16)
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight.abs(), 2, 4))
    x = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    expected = linear(x)
    export_semi_structured(linear)
    torch.testing.assert_close(linear(x), expected, atol=0.05, rtol=0.05)
    dense = nn.Linear(128, 128).to("cuda", torch.bfloat16)
    with pytest.raises(ValueError, match="not 2:4"):
        export_semi_structured(dense)
