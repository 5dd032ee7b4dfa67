"""Invariants of the Scalpel under random surgery, for every mask mechanism (hypothesis).

Whatever a surgeon does, for every mechanism: the density is exactly what the masks say, N:M
patterns stay valid, a pruned weight contributes nothing to the forward pass (hard masks), its
optimizer state is reset, and the organism's ``state_dict`` round trip is exact.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.conf import compose
from esper.policies.base import swap
from esper.workloads.actions import LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism
from esper.workloads.scalpel.nm import nm_violations
from tests.organisms import TINY_ORGANISM

MECHANISMS = ["masked", "straight_through", "gumbel_softmax", "hard_concrete", "gumbel_topk",
              "nm", "atm"]  # fmt: skip
HARD = ("masked", "straight_through", "nm", "atm")
"""Mechanisms whose forward pass multiplies by the 0/1 mask itself."""


def _random_surgery(organism: Organism, gen: torch.Generator, fraction: float) -> dict:
    actions = {}
    for name in organism.scalpel.names:
        mask = organism.scalpel.mask(name).reshape(-1)
        k = int(fraction * int(mask.sum()))
        drop, grow = swap(torch.rand(mask.numel(), generator=gen),
                          torch.rand(mask.numel(), generator=gen), mask, k,
                          organism.scalpel.block_pattern(name))  # fmt: skip
        actions[name] = LayerAction(prune=drop, regrow=grow)
    return actions


def _check(organism: Organism, mechanism: str) -> None:
    scalpel = organism.scalpel
    params = dict(organism.host.named_parameters())
    total = kept = 0
    for name in scalpel.names:
        mask = scalpel.mask(name)
        assert scalpel.density(name) == int(mask.sum()) / mask.numel()  # exactly as accounted
        total, kept = total + mask.numel(), kept + int(mask.sum())
        if (pattern := scalpel.block_pattern(name)) is not None:
            assert nm_violations(mask, *pattern) == 0
        momentum = organism.optimizer.state.get(params[name], {}).get("momentum_buffer")
        if momentum is not None and mechanism in ("masked", "nm"):
            assert momentum[~mask].eq(0).all()  # pruned weights carry no optimizer state
    assert abs(scalpel.global_density() - kept / total) < 1e-12
    if mechanism in HARD:  # the forward pass is the network with pruned weights at zero
        x = organism.stream.peek(1)[0].x
        with torch.no_grad():
            out = organism.host(x)
            saved = {n: params[n].detach().clone() for n in scalpel.names}
            for n in scalpel.names:
                params[n].mul_(scalpel.mask(n))
            zeroed = organism.host(x)
            for n in scalpel.names:
                params[n].copy_(saved[n])
        assert torch.allclose(out, zeroed, atol=1e-6)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(
    mechanism=st.sampled_from(MECHANISMS),
    seed=st.integers(0, 2**16),
    fraction=st.floats(0.0, 0.5),
    surgeries=st.integers(1, 3),
)
def test_random_surgery_keeps_every_invariant(
    mechanism: str, seed: int, fraction: float, surgeries: int
) -> None:
    overrides = [*TINY_ORGANISM, f"workload.scalpel.mechanism.name={mechanism}",
                 f"experiment.seed={seed}"]  # fmt: skip
    organism = build_organism(compose(overrides))
    organism.reset()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(surgeries):
        step = organism.step(_random_surgery(organism, gen, fraction))
        assert not step.info["diverged"]
        _check(organism, mechanism)
    twin = build_organism(compose(overrides))
    twin.reset()
    twin.load_state_dict(organism.state_dict())
    a, b = organism.state_dict(), twin.state_dict()
    flat_a, flat_b = _flatten(a), _flatten(b)
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        other = flat_b[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        elif isinstance(value, float) and math.isnan(value):  # a batch without a score
            assert isinstance(other, float) and math.isnan(other), key
        else:
            assert value == other, key


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(value, list | tuple):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


@settings(max_examples=len(MECHANISMS), deadline=None, derandomize=True)
@given(mechanism=st.sampled_from(MECHANISMS))
def test_every_mechanism_is_drawn(mechanism: str) -> None:  # a cheap smoke of each one
    organism = build_organism(
        compose([*TINY_ORGANISM, f"workload.scalpel.mechanism.name={mechanism}"])
    )
    organism.reset()
    organism.step(_random_surgery(organism, torch.Generator().manual_seed(0), 0.2))
    _check(organism, mechanism)
