"""Every random draw comes from a component's own CPU generator (runs on any machine).

A CPU ``torch.Generator`` cannot drive a CUDA draw, and drawing on the CPU then moving the result
is what makes CPU and CUDA runs from one seed identical. Here: the organism's random streams are
CPU generators, a whole run never touches the global RNG, and no source file builds a generator
on another device (the CUDA half of the story is ``tests/workloads/test_cuda.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import esper
from esper.conf import compose
from esper.policies.base import make_policy
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism
from tests.organisms import TINY_ORGANISM

_BASE = TINY_ORGANISM
_MECHANISMS = (
    "masked",
    "straight_through",
    "gumbel_softmax",
    "hard_concrete",
    "gumbel_topk",
    "atm",
)


def _organism(mechanism: str) -> Organism:
    return build_organism(compose([*_BASE, f"workload.scalpel.mechanism.name={mechanism}"]))


@pytest.mark.parametrize("mechanism", [*_MECHANISMS, "nm"])
def test_the_organisms_random_streams_are_cpu_generators(mechanism: str) -> None:
    org = _organism(mechanism)
    streams = {
        "organism": org.generator,
        "scalpel": org.scalpel.generator,
        "mechanism": org.scalpel.mechanism.generator,
        "nervous system": org.nervous._generator,
        "stream": org.stream._gen,
    }
    for owner, generator in streams.items():
        assert generator.device.type == "cpu", owner


@pytest.mark.parametrize("mechanism", _MECHANISMS)
def test_a_run_never_draws_from_the_global_rng(mechanism: str) -> None:
    org = _organism(mechanism)
    policies = [
        make_policy("emrakul", general_interval=2, seed=0),
        make_policy("cbp", replacement_rate=0.05, maturity_threshold=2),
    ]
    before = torch.get_rng_state()
    step = org.reset()
    for policy in policies:
        policy.reset(org, step)
    for policy in policies * 2:
        step = org.step(policy.act(org, step))
    assert torch.equal(torch.get_rng_state(), before), (
        "something drew from the global RNG: use the component's own CPU generator"
    )


def test_no_source_builds_a_generator_on_another_device() -> None:
    root = Path(esper.__file__).parent
    pattern = re.compile(r"Generator\(\s*device\s*=")
    offenders = [
        str(path.relative_to(root))
        for path in sorted(root.rglob("*.py"))
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"random streams must be CPU generators (draw, then move): {offenders}"
