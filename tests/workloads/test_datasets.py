"""Offline sources: every registry entry, and the slowly-changing regression problem."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from esper.registry import InvalidParameterError
from esper.workloads import SOURCES, SlowlyChangingRegression, make_source

_SMALL = {"mnist1d": {"num_samples": 500}, "gaussian_mixture": {"num_samples": 200}}


@pytest.mark.parametrize("name", SOURCES.names())
def test_every_source_builds_and_samples(name: str) -> None:
    source = make_source(name, **_SMALL.get(name, {}))
    x, y = source.sample(torch.Generator().manual_seed(0), 12, 0)
    assert tuple(x.shape) == (12, *source.input_shape) and x.dtype == torch.float32
    # an agent's targets are (action, TD target, done) rows (esper.workloads.rl.agent)
    assert y.shape == ((12, 3) if source.kind == "q_learning" else (12,))
    if source.kind == "classification":
        assert y.dtype == torch.long and int(y.max()) < source.num_outputs


def test_shapes_of_the_bundled_datasets() -> None:
    assert make_source("digits").input_shape == (1, 8, 8)
    assert make_source("mnist1d", num_samples=500).input_shape == (1, 40)
    assert make_source("gaussian_mixture", dim=7, num_samples=70).input_shape == (7,)


def test_mnist1d_generation_is_deterministic_and_leaves_numpy_state_alone() -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, b = make_source("mnist1d", num_samples=300), make_source("mnist1d", num_samples=300)
    assert np.array_equal(np.random.get_state()[1], before)
    assert torch.equal(a.x, b.x)  # type: ignore[attr-defined]


def test_class_restricted_sampling(digits) -> None:  # type: ignore[no-untyped-def]
    _, y = digits.sample(torch.Generator().manual_seed(0), 500, 0, classes=(3, 7))
    assert set(y.tolist()) == {3, 7}
    with pytest.raises(ValueError, match="do not exist"):
        digits.sample(torch.Generator(), 5, 0, classes=(12,))


def test_unknown_source_parameter_is_named() -> None:
    with pytest.raises(InvalidParameterError, match="no parameter 'bogus'; allowed: num_classes"):
        make_source("gaussian_mixture", bogus=1)


class TestSlowlyChangingRegression:
    def test_one_flip_bit_changes_per_distribution(self) -> None:
        scr = SlowlyChangingRegression(seed=0)
        states = [scr.flip_bits(d) for d in range(30)]
        for a, b in itertools.pairwise(states):
            assert int((a != b).sum()) == 1
        assert torch.equal(scr.flip_bits(3), states[3])  # pure function of d

    def test_inputs_hold_flip_bits_and_random_bits(self) -> None:
        scr = SlowlyChangingRegression(seed=0)
        x, _ = scr.sample(torch.Generator().manual_seed(0), 256, 4)
        assert x.shape == (256, 20) and set(x.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(x[:, :15], scr.flip_bits(4).expand(256, -1))
        assert 0.3 < float(x[:, 15:].mean()) < 0.7

    def test_target_is_the_ltu_network_with_beta_threshold(self) -> None:
        scr = SlowlyChangingRegression(num_bits=20, num_hidden=100, beta=0.7, seed=1)
        assert scr.w.shape == (100, 21) and set(scr.w.unique().tolist()) == {-1.0, 1.0}
        negatives = (scr.w < 0).sum(1).float()
        torch.testing.assert_close(scr.theta, 21 * 0.7 - negatives)
        x, y = scr.sample(torch.Generator().manual_seed(0), 64, 0)
        xb = torch.cat([x, torch.ones(64, 1)], 1)
        manual = torch.stack(
            [
                sum(scr.v[i] * float(xb[n] @ scr.w[i] >= scr.theta[i]) for i in range(100))
                for n in range(64)
            ]
        )
        torch.testing.assert_close(y, manual.float())
        assert y.std() > 0

    def test_target_changes_when_the_distribution_changes(self) -> None:
        scr = SlowlyChangingRegression(seed=0)
        free = torch.randint(2, (512, 5), generator=torch.Generator().manual_seed(0)).float()
        outs = [
            scr.target(torch.cat([scr.flip_bits(d).expand(512, -1), free], 1)) for d in range(6)
        ]
        assert any(not torch.equal(outs[0], o) for o in outs[1:])

    def test_validation(self) -> None:
        with pytest.raises(ValueError, match="num_flip_bits"):
            SlowlyChangingRegression(num_bits=5, num_flip_bits=6)
