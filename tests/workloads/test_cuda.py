"""The organism and the policies on CUDA (``experiment.device=cuda``); skipped without a GPU.

Every mask mechanism is run through a reset and three surgeries by a drop-and-grow baseline
(RigL), by Emrakul and by a unit-resetting baseline (CBP, ReDo); host weights and masks must be
on the GPU, rewards finite, and a checkpoint (saved, loaded on the CPU, restored into a fresh
CUDA organism) must continue with the same actions. A CPU run and a CUDA run from the same seed
must agree: every random draw comes from a CPU generator. Meant to run as one short script on a
GPU machine: ``pytest -q tests/workloads/test_cuda.py`` (well under two minutes).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from esper.conf import compose
from esper.policies.base import Policy, make_policy
from esper.workloads.actions import LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep
from tests.organisms import TINY_ORGANISM, alone_and_in_cohort

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MECHANISMS = (
    "masked",
    "straight_through",
    "gumbel_softmax",
    "hard_concrete",
    "gumbel_topk",
    "nm",
    "atm",
)
_BASE = TINY_ORGANISM
_POLICIES: dict[str, dict[str, Any]] = {  # settings under which each operates at once (K = 4)
    "rigl": {"delta_t": 4},
    "emrakul": {"general_interval": 2, "seed": 0},
    "cbp": {"replacement_rate": 0.05, "maturity_threshold": 2},
    "redo": {"threshold": 1.0, "interval": 4},
    "gmp": {"final_density": 0.3, "frequency": 4, "steps": 8},
}
# N:M masks refuse a regrowth that overfills a block, which drop-and-grow surgeons do not
# avoid (on any device): under ``nm`` the prune-only GMP stands in for them.
_SWAPPING = ("rigl", "emrakul")
_UNIT_RESETS = ("cbp", "redo")  # alternated over the mechanisms to keep the run short
_CASES = [
    *((m, p) for m in MECHANISMS if m != "nm" for p in _SWAPPING),
    ("nm", "gmp"),
    *((m, _UNIT_RESETS[i % 2]) for i, m in enumerate(MECHANISMS)),
]


def _organism(mechanism: str, device: str = "cuda") -> Organism:
    return build_organism(
        compose(
            [*_BASE, f"experiment.device={device}", f"workload.scalpel.mechanism.name={mechanism}"]
        )
    )


def _plain(actions: dict[str, LayerAction]) -> list[tuple[Any, ...]]:
    def ints(x: Any) -> list[int]:
        return torch.as_tensor(x, dtype=torch.int64).tolist()

    return [
        (n, ints(a.prune), ints(a.regrow), ints(a.reset_units), a.tau, a.target_density)
        for n, a in sorted(actions.items())
    ]


def _roll(
    organism: Organism, policy: Policy, step: OrganismStep, surgeries: int
) -> tuple[OrganismStep, list[list[tuple[Any, ...]]]]:
    seen = []
    for _ in range(surgeries):
        actions = policy.act(organism, step)
        for action in actions.values():  # policies decide on the CPU
            for field in (action.prune, action.regrow, action.reset_units):
                assert not isinstance(field, torch.Tensor) or field.device.type == "cpu"
        seen.append(_plain(actions))
        step = organism.step(actions)
        assert math.isfinite(step.reward) and not step.info["diverged"]
    return step, seen


def _assert_on_device(organism: Organism, device: str = "cuda") -> None:
    """Weights, masks, gates, dense gradients, optimizer state and readings on ``device``."""
    for name, p in organism.host.named_parameters():
        assert p.device.type == device, name
    for p in organism.scalpel.parameters():
        assert p.device.type == device
    for name, mask in organism.scalpel.masks().items():
        assert mask.device.type == device, name
        assert organism.scalpel.dense_grad(name).device.type == device, name
        assert organism.age(name).device.type == device, name
    for state in organism.optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim():
                assert value.device.type == device, key
    assert organism._last is not None
    for name, stats in organism._last.gradients.layers.items():
        assert stats.fisher.device.type == device, name


@pytest.mark.parametrize(("mechanism", "policy_name"), _CASES)
def test_policy_operates_on_a_cuda_organism(mechanism: str, policy_name: str) -> None:
    organism = _organism(mechanism)
    policy = make_policy(policy_name, **_POLICIES[policy_name])
    step = organism.reset()
    policy.reset(organism, step)
    step, seen = _roll(organism, policy, step, 3)
    _assert_on_device(organism)
    assert any(any(a[1] or a[2] or a[3] for a in surgery) for surgery in seen), (
        f"{policy_name} should have operated on {mechanism}, or this test proves nothing"
    )
    for obs in step.observations.values():  # the Nervous System's summaries stay on the CPU
        assert obs.to_tensor().device.type == "cpu"
    assert step.global_state.to_tensor().device.type == "cpu"


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_checkpoint_loaded_on_the_cpu_continues_on_cuda(mechanism: str) -> None:
    policy_name = "gmp" if mechanism == "nm" else "rigl"

    def build() -> tuple[Organism, Policy, OrganismStep]:
        organism = _organism(mechanism)
        policy = make_policy(policy_name, **_POLICIES[policy_name])
        first = organism.reset()
        policy.reset(organism, first)
        return organism, policy, first

    _, expected, got = _resumed(build)
    assert got == expected
    assert any(any(a[1] or a[2] for a in surgery) for surgery in expected)


@pytest.mark.parametrize("mechanism", ["masked", "gumbel_softmax", "hard_concrete", "atm"])
def test_cpu_and_cuda_runs_draw_the_same_numbers(mechanism: str) -> None:
    cpu, cuda = _organism(mechanism, "cpu"), _organism(mechanism, "cuda")
    for name in cpu.scalpel.names:  # initial supports come from the Scalpel's CPU generator
        assert torch.equal(cpu.scalpel.mask(name), cuda.scalpel.mask(name).cpu()), name
    a, b = cpu.reset(), cuda.reset()
    assert a.info["online_accuracy"] == pytest.approx(b.info["online_accuracy"], abs=1e-4)
    assert a.info["online_loss"] == pytest.approx(b.info["online_loss"], rel=1e-4)


def test_a_cohort_on_cuda_follows_each_members_lone_trajectory() -> None:
    """The batched training of ``esper.workloads.cohort`` (the MLP's stacked form) on the GPU,
    against the same organisms trained one by one on the GPU."""
    alone, cohort, pairs = alone_and_in_cohort(
        compose([*_BASE, "experiment.device=cuda"]), members=3, surgeries=2
    )
    for step_a, step_c in pairs:
        assert step_a.info["online_loss"] == pytest.approx(step_c.info["online_loss"], abs=1e-4)
    for a, c in zip(alone, cohort.members, strict=True):
        assert next(c.host.parameters()).is_cuda
        for x, y in zip(a.host.parameters(), c.host.parameters(), strict=True):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)


_PLASTICITY = ("workload.optimizer=upgd", "workload.l2_init=1e-3", "workload.weight_decay=1e-4",
               "workload.host.params.layer_norm=true")  # fmt: skip


def test_upgd_and_l2_init_on_a_layer_norm_host_resume_on_cuda() -> None:
    """UPGD's noise generator and L2 Init's anchors, saved and loaded on the CPU, continue on
    CUDA under RigL, and pruned weights stay exactly zero there."""

    def build() -> tuple[Organism, Policy, OrganismStep]:
        organism = build_organism(compose([*_BASE, "experiment.device=cuda", *_PLASTICITY]))
        policy = make_policy("rigl", **_POLICIES["rigl"])
        first = organism.reset()
        policy.reset(organism, first)
        return organism, policy, first

    (organism, weights), expected, got = _resumed(build)
    assert got == expected and any(any(a[1] or a[2] for a in s) for s in expected)
    for name, p in organism.host.named_parameters():
        assert torch.equal(p.detach(), weights[name]), name
        if name in organism.scalpel.names:
            assert torch.all(p.detach()[~organism.scalpel.mask(name)] == 0), name


def _resumed(
    build: Callable[[], tuple[Organism, Policy, OrganismStep]],
) -> tuple[tuple[Organism, dict[str, torch.Tensor]], list[Any], list[Any]]:
    """Roll a built organism 2 surgeries, save it on the CPU, roll 2 more (``expected``); load
    the save into a fresh build on its device and roll the same 2 (``got``). Returns the
    restored organism with the original's weights after its last 2, and both rolls."""
    organism, policy, step = build()
    step, _ = _roll(organism, policy, step, 2)
    buffer = io.BytesIO()
    torch.save({"organism": organism.state_dict(), "policy": policy.state_dict()}, buffer)
    _, expected = _roll(organism, policy, step, 2)
    weights = {n: p.detach().clone() for n, p in organism.host.named_parameters()}
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True, map_location="cpu")
    organism, policy, _ = build()
    organism.load_state_dict(saved["organism"])
    policy.load_state_dict(saved["policy"])
    _assert_on_device(organism)
    last = organism._last
    assert last is not None
    restored = OrganismStep(last.observations, last.global_state, 0.0, None, [], last)
    _, got = _roll(organism, policy, restored, 2)
    return (organism, weights), expected, got
