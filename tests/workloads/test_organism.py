"""The organism environment: surgery, events, rewards, sedation and exact checkpoints."""

from __future__ import annotations

import io
import math

import pytest
import torch

from esper.conf import RewardConfig, compose
from esper.workloads import prequential
from esper.workloads.actions import LayerAction
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism
from esper.workloads.reward import RewardComponents
from esper.workloads.sgd import sgd_step

_BASE = [
    "policy.density=0.2",
    "policy.surgery_interval=6",
    "workload.batch_size=16",
    "workload.host.params.hidden=[32,16]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=3",
]


def _organism(*overrides: str) -> Organism:
    return build_organism(compose([*_BASE, *overrides]))


def _rigl_like(org: Organism, fraction: float = 0.2) -> dict[str, LayerAction]:
    """Drop the smallest active weights, regrow the largest dense gradients (deterministic)."""
    actions = {}
    weights = dict(org.host.named_parameters())
    for name in org.scalpel.names:
        mask = org.scalpel.mask(name).view(-1)
        w = weights[name].detach().view(-1).abs()
        grad = org.scalpel.dense_grad(name).view(-1).abs()
        active, inactive = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
        k = max(1, int(fraction * active.numel()))
        drop = active[torch.argsort(w[active], stable=True)[:k]]
        grow = inactive[torch.argsort(grad[inactive], descending=True, stable=True)[:k]]
        actions[name] = LayerAction(prune=drop, regrow=grow, sedation=0.5, sedation_steps=2)
    return actions


def test_reset_and_step_return_observations_rewards_and_events() -> None:
    org = _organism()
    first = org.reset()
    assert first.components is None and first.info["sgd_step"] == 6
    assert list(first.observations) == org.scalpel.names
    widths = {o.to_tensor().shape for o in first.observations.values()}
    assert len(widths) == 1
    assert first.global_state.to_tensor().dim() == 1
    out = org.step(_rigl_like(org))
    assert out.info["sgd_step"] == 12 and out.info["surgery_step"] == 1
    assert isinstance(out.components, RewardComponents)
    assert out.reward == pytest.approx(out.components.weighted(RewardConfig()))
    actions = {(e.layer, e.action) for e in out.events}
    for name in org.scalpel.names:
        assert {(name, "prune"), (name, "regrow"), (name, "sedate")} <= actions
    for event in out.events:
        assert event.reward == out.reward and event.surgery_step == 0
        assert math.isfinite(event.loss_after) and math.isfinite(event.fisher_trace)
        if event.action in ("prune", "regrow"):
            assert event.count == len(event.indices) > 0


def test_event_counts_are_the_weights_that_changed_state() -> None:
    org = _organism()
    org.reset()
    name = org.scalpel.names[0]
    mask = org.scalpel.mask(name).view(-1)
    active, inactive = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
    prune = torch.cat([active[:5], inactive[:3]])  # 3 already pruned: no-ops
    out = org.step({name: LayerAction(prune=prune, regrow=inactive[3:7])})
    (pruned,) = [e for e in out.events if e.action == "prune"]
    (regrown,) = [e for e in out.events if e.action == "regrow"]
    assert pruned.indices == sorted(active[:5].tolist()) and pruned.count == 5
    assert regrown.count == 4
    assert pruned.density_before > org.scalpel.density(name) - 1e-9
    assert not org.scalpel.mask(name).view(-1)[active[:5]].any()


def test_density_is_held_by_equal_prune_and_regrow() -> None:
    org = _organism()
    org.reset()
    before = org.scalpel.global_density()
    for _ in range(3):
        out = org.step(_rigl_like(org))
    assert out.info["density"] == pytest.approx(before)
    assert 0.19 < before < 0.21


def test_sedation_damps_the_layer_learning_rate_then_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = _organism("policy.surgery_interval=4", "workload.organism.spike_window=2")
    org.reset()
    name = org.scalpel.names[1]
    group = next(g for g in org.optimizer.param_groups if g.get("layer") == name)
    base = group["lr"]
    seen: list[float] = []

    def spy(optimizer: torch.optim.Optimizer) -> bool:  # the update of every training step
        seen.append(group["lr"])
        return sgd_step(optimizer)

    monkeypatch.setattr(prequential, "sgd_step", spy)
    org.step({name: LayerAction(sedation=0.25, sedation_steps=3)})
    assert seen == [base * 0.25] * 3 + [base]


def test_unknown_layer_and_step_before_reset_are_errors() -> None:
    org = _organism()
    with pytest.raises(RuntimeError, match="reset"):
        org.step({})
    org.reset()
    with pytest.raises(KeyError, match="unknown layers"):
        org.step({"nope.weight": LayerAction()})


def test_divergence_is_reported_and_training_stops() -> None:
    org = _organism()
    first = org.reset()
    for group in org.optimizer.param_groups:
        group["lr"] = 1e12
    out = org.step({})
    assert out.info["diverged"] and out.info["sgd_step"] < 12
    # the sensors are not read again: the last reading stands (vital signs are the window's)
    assert torch.equal(out.reading.global_state.to_tensor(), first.reading.global_state.to_tensor())
    with pytest.raises(FloatingPointError, match=r"lower workload\.lr"):
        _organism("workload.lr=1e12").reset()


@pytest.mark.parametrize("mechanism", ["masked", "straight_through", "gumbel_softmax", "atm"])
def test_state_dict_round_trip_continues_bit_exactly(mechanism: str) -> None:
    overrides = (f"workload.scalpel.mechanism.name={mechanism}",)
    org = _organism(*overrides)
    org.reset()
    org.step(_rigl_like(org))
    buffer = io.BytesIO()
    torch.save(org.state_dict(), buffer)
    expected = [org.step(_rigl_like(org)) for _ in range(2)]
    params = {k: v.clone() for k, v in org.host.state_dict().items()}

    fresh = _organism(*overrides)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    got = [fresh.step(_rigl_like(fresh)) for _ in range(2)]
    for a, b in zip(expected, got, strict=True):
        assert a.reward == b.reward and a.components == b.components
        assert torch.equal(a.global_state.to_tensor(), b.global_state.to_tensor())
        assert [(e.layer, e.action, e.indices) for e in a.events] == [
            (e.layer, e.action, e.indices) for e in b.events
        ]
    for k, v in fresh.host.state_dict().items():
        assert torch.equal(v, params[k]), k
