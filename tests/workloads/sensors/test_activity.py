"""ReDo dormant scores and effective ranks on constructed activations."""

from __future__ import annotations

import math

import pytest
import torch

from esper.workloads.sensors import (
    activity_statistics,
    dormant_scores,
    effective_rank,
    stable_rank,
    unit_matrix,
)


def test_redo_scores_on_constructed_activations() -> None:
    # Four units with mean |activation| 1, 2, 0.1 and 0: the layer mean is 0.775.
    acts = torch.tensor([[1.0, -2.0, 0.1, 0.0], [-1.0, 2.0, -0.1, 0.0]])
    scores = dormant_scores(acts)
    torch.testing.assert_close(scores, torch.tensor([1.0, 2.0, 0.1, 0.0]) / 0.775)
    st = activity_statistics(acts, channels_first=False, threshold=0.15)
    assert st.dormant.tolist() == [False, False, True, True]
    assert st.dormant_fraction == 0.5
    assert dormant_scores(torch.zeros(3, 2)).tolist() == [0.0, 0.0]


def test_unit_axes_for_conv_and_sequence() -> None:
    conv = torch.zeros(2, 3, 4, 4)
    conv[:, 1] = 1.0  # only channel 1 fires
    st = activity_statistics(conv, channels_first=True, threshold=0.1)
    assert st.dormant.tolist() == [True, False, True]
    tokens = torch.zeros(2, 5, 3)
    tokens[..., 2] = -3.0
    assert unit_matrix(tokens, channels_first=False).shape == (10, 3)
    assert activity_statistics(tokens, False).dormant.tolist() == [True, True, False]


def test_effective_rank_on_constructed_matrices() -> None:
    u, _ = torch.linalg.qr(torch.randn(50, 50, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))

    def with_singular_values(s: list[float]) -> torch.Tensor:
        return u[:, : len(s)] @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v[: len(s)]

    # Equal singular values: erank is the rank exactly.
    assert effective_rank(with_singular_values([2.0] * 8)) == pytest.approx(8.0)
    assert effective_rank(with_singular_values([3.0, 3.0, 3.0])) == pytest.approx(3.0)
    # Rank one, and p = (0.5, 0.25, 0.25): exp(H) = exp(1.5 ln 2).
    assert effective_rank(with_singular_values([5.0])) == pytest.approx(1.0)
    assert effective_rank(with_singular_values([2.0, 1.0, 1.0])) == pytest.approx(
        math.exp(1.5 * math.log(2.0))
    )
    assert effective_rank(torch.zeros(4, 3)) == 0.0
    # srank with δ = 0.01: 99 % of the sum of (10, 10, 0.1) needs both large values.
    assert stable_rank(with_singular_values([10.0, 10.0, 0.1])) == 2
    assert stable_rank(with_singular_values([10.0, 10.0, 1.0])) == 3
    st = activity_statistics(with_singular_values([1.0] * 4), channels_first=False)
    assert st.rank_ratio == pytest.approx(4 / 8)
