"""A cohort trains its members as one batched network: each member's trajectory is the one
it follows alone (to float tolerance), divergence stops a member where it would stop alone,
members can be replaced without touching the others, and what it cannot train is refused."""

from __future__ import annotations

import math

import pytest
import torch

from esper.conf import compose
from esper.policies.base import make_policy
from esper.workloads.actions import LayerAction
from esper.workloads.cohort import Cohort, CohortError
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism
from tests.organisms import alone_and_in_cohort

_BASE = [
    "policy.density=0.2",
    "policy.surgery_interval=6",
    "workload.batch_size=16",
    "workload.host.params.hidden=[32,16]",
    "workload.organism.sense_batches=2",
    "workload.organism.spike_window=3",
]
_TOL = 1e-5
_SMALL_CNN = [
    "workload=digits_affine_cnn",
    "workload.host.params.channels=[4,8]",
    "workload.host.params.hidden=16",
]


def _organisms(n: int, *overrides: str) -> list[Organism]:
    cfg = compose([*_BASE, *overrides])
    return [build_organism(cfg, r) for r in range(n)]


def _assert_same_state(alone: Organism, member: Organism) -> None:
    for (name, a), b in zip(alone.host.named_parameters(), member.host.parameters(), strict=True):
        assert torch.allclose(a, b, atol=_TOL, equal_nan=True), name
    for a, b in zip(alone.optimizer.state.values(), member.optimizer.state.values(), strict=True):
        assert torch.allclose(a["momentum_buffer"], b["momentum_buffer"], atol=_TOL, equal_nan=True)
    for name in alone.scalpel.names:
        assert torch.equal(alone.scalpel.mask(name), member.scalpel.mask(name))
    assert alone.sgd_step == member.sgd_step
    assert alone.stream.state_dict()["step"] == member.stream.state_dict()["step"]


def test_each_member_follows_its_lone_trajectory_under_rigl_with_sedation() -> None:
    alone, together = _organisms(3), _organisms(3)
    cohort = Cohort(together)
    steps_a = [o.reset() for o in alone]
    steps_c = cohort.reset()
    policies_a = [make_policy("rigl", delta_t=1) for _ in alone]
    policies_c = [make_policy("rigl", delta_t=1) for _ in together]
    for p, o, s in zip(policies_a + policies_c, alone + together, steps_a + steps_c, strict=True):
        p.reset(o, s)
    sedate = {alone[0].scalpel.names[1]: LayerAction(sedation=0.3, sedation_steps=4)}
    for t in range(4):
        acts_a = [p.act(o, s) for p, o, s in zip(policies_a, alone, steps_a, strict=True)]
        acts_c = [p.act(o, s) for p, o, s in zip(policies_c, together, steps_c, strict=True)]
        if t == 1:  # sedation in member 2 only (lr per member and layer)
            acts_a[2] = {**acts_a[2], **sedate}
            acts_c[2] = {**acts_c[2], **sedate}
        steps_a = [o.step(a) for o, a in zip(alone, acts_a, strict=True)]
        steps_c = cohort.step(acts_c)
        for a, c in zip(steps_a, steps_c, strict=True):
            assert a.info["online_accuracy"] == c.info["online_accuracy"]
            assert math.isclose(a.info["online_loss"], c.info["online_loss"], abs_tol=_TOL)
            assert math.isclose(a.reward, c.reward, abs_tol=1e-4)
            assert [(e.layer, e.action, e.count) for e in a.events] == [
                (e.layer, e.action, e.count) for e in c.events
            ]
            assert torch.allclose(
                a.global_state.to_tensor(), c.global_state.to_tensor(), atol=1e-4, equal_nan=True
            )
    assert any(e.action == "regrow" for e in steps_c[0].events)  # surgery really happened
    for a, c in zip(alone, together, strict=True):
        _assert_same_state(a, c)
        for name in a.scalpel.names:  # regrowth by gradient reads the last dense gradient
            assert torch.allclose(a.scalpel.dense_grad(name), c.scalpel.dense_grad(name), atol=_TOL)


@pytest.mark.parametrize(
    "overrides",
    [
        _SMALL_CNN,  # the generic vmap form of the stacked forward
        ["workload=slowly_changing_regression"],  # the MLP's own form; a regression loss
        ["workload.host.params.activation=tanh", "workload.host.params.hidden=[32,16]"],
        ["workload.host.params.layer_norm=true", "workload.host.params.hidden=[32,16]"],
    ],
)
def test_members_follow_their_lone_trajectories_on_every_stacked_form(
    overrides: list[str],
) -> None:
    cfg = compose([*overrides, "policy.density=0.2", "policy.surgery_interval=6",
                   "workload.organism.sense_batches=2", "workload.batch_size=16"])  # fmt: skip
    alone, cohort, pairs = alone_and_in_cohort(cfg, members=2, surgeries=2)
    for step_a, step_c in pairs:
        for key in ("online_loss", "online_accuracy"):
            assert math.isclose(step_a.info[key], step_c.info[key], abs_tol=_TOL), key
    for a, c in zip(alone, cohort.members, strict=True):
        _assert_same_state(a, c)
        if cfg.workload.momentum == 0:  # PyTorch's SGD keeps no buffer then, nor does a cohort
            assert len(a.optimizer.state) == len(c.optimizer.state) == 0


@pytest.mark.parametrize(
    "overrides", [[], _SMALL_CNN, ["workload=slowly_changing_regression"]], ids=str
)
def test_the_spike_control_measured_for_all_members_at_once_is_each_members_own(
    overrides: list[str],
) -> None:
    alone, together = _organisms(3, *overrides), _organisms(3, *overrides)
    cohort = Cohort(together)
    steps_a = [o.reset() for o in alone]
    steps_c = cohort.reset()
    actions = []
    for organisms, steps in ((alone, steps_a), (together, steps_c)):
        policies = [make_policy("rigl", delta_t=1) for _ in organisms]
        for p, o, s in zip(policies, organisms, steps, strict=True):
            p.reset(o, s)
        actions.append([p.act(o, s) for p, o, s in zip(policies, organisms, steps, strict=True)])
    lone = [o.begin(a) for o, a in zip(alone, actions[0], strict=True)]
    batched = cohort.begin(actions[1])
    for a, c in zip(lone, batched, strict=True):
        assert math.isfinite(a.control_loss) and math.isfinite(a.operated_loss)
        assert a.operated_loss != a.control_loss  # the surgery changed what the probe sees
        assert math.isclose(a.control_loss, c.control_loss, rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(a.operated_loss, c.operated_loss, rel_tol=1e-5, abs_tol=1e-6)
        assert [(e.layer, e.action, e.count) for e in a.events] == [
            (e.layer, e.action, e.count) for e in c.events
        ]
    for a, c in zip(alone, together, strict=True):
        _assert_same_state(a, c)  # the probes consumed no batch
    with pytest.raises(ValueError, match="2 action maps for 3 members"):
        cohort.begin(actions[1][:2])


def test_a_nan_member_spares_the_others_control_and_a_bad_action_operates_on_none() -> None:
    alone, together = _organisms(2), _organisms(2)
    cohort = Cohort(together)
    alone[0].reset()
    cohort.reset()
    with torch.no_grad():
        for p in together[1].host.parameters():
            p.fill_(float("nan"))
    lone, batched = alone[0].begin({}), cohort.begin([{}, {}])
    assert math.isclose(lone.control_loss, batched[0].control_loss, rel_tol=1e-5)
    assert math.isnan(batched[1].control_loss) and batched[1].operated_loss is not None
    masks = [dict(m.scalpel.masks()) for m in together]
    steps = [m.surgery_step for m in together]
    name = together[0].scalpel.names[0]
    prune_all = LayerAction(prune=together[0].scalpel.mask(name).reshape(-1).nonzero().view(-1))
    with pytest.raises(KeyError, match="unknown layers"):
        cohort.begin([{name: prune_all}, {"no.such.weight": LayerAction()}])
    assert [m.surgery_step for m in together] == steps  # member 0 was not operated either
    for before, member in zip(masks, together, strict=True):
        for n, mask in before.items():
            assert torch.equal(mask, member.scalpel.mask(n))


def test_a_surgery_whose_caller_measured_the_control_must_measure_the_operated_host() -> None:
    organism = _organisms(1)[0]
    organism.reset()
    surgery = organism.begin({}, control_loss=1.0)
    assert surgery.control_loss == 1.0 and surgery.operated_loss is None
    events, diverged = organism.train_steps()
    with pytest.raises(RuntimeError, match="operated loss was never measured"):
        organism.finish(surgery, events, diverged)


def test_a_diverging_member_stops_where_it_would_alone_and_the_others_go_on() -> None:
    alone, together = _organisms(2), _organisms(2)
    for o in alone:
        o.reset()
    cohort = Cohort(together)
    cohort.reset()
    for org in (alone[1], together[1]):
        for group in org.optimizer.param_groups:
            group["lr"] = 1e12
    steps_a = [o.step({}) for o in alone]
    steps_c = cohort.step([{}, {}])
    assert [s.info["diverged"] for s in steps_c] == [False, True]
    assert [s.info["sgd_step"] for s in steps_c] == [s.info["sgd_step"] for s in steps_a]
    assert steps_c[1].info["sgd_step"] < 12
    for a, c in zip(alone, together, strict=True):
        _assert_same_state(a, c)


def test_a_replaced_member_leaves_the_others_untouched() -> None:
    alone, together = _organisms(3), _organisms(3)
    for o in alone:
        o.reset()
    cohort = Cohort(together)
    cohort.reset()
    newcomer = build_organism(compose(_BASE), 7)
    newcomer.reset()
    twin = build_organism(compose(_BASE), 7)
    twin.reset()
    cohort.replace(1, newcomer)  # e.g. a rebuilt replica, or a PBT copy
    alone[1] = twin
    for _ in range(2):
        for o in alone:
            o.step({})
        cohort.step([{}] * 3)
    for a, c in zip(alone, cohort.members, strict=True):
        _assert_same_state(a, c)
    with pytest.raises(IndexError, match="no cohort member 3"):
        cohort.replace(3, twin)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["workload.scalpel.mechanism.name=straight_through"], "member 1: mask mechanism"),
        (["workload.optimizer=adam"], "member 1: optimizer Adam"),
        (["workload.optimizer=upgd"], "member 1: optimizer UPGD"),
        (["workload.l2_init=1e-3"], "member 1: its optimizer has step hooks"),
        (["workload.weight_decay=1e-3"], "member 1: SGD weight_decay"),
        (["workload.host.params.hidden=[32,8]"], "member 1 differs from member 0"),
        (["policy.surgery_interval=5"], "member 1 differs from member 0"),
        (["workload.organism.spike_window=2"], "member 1 differs .* spike window"),
        (["workload.organism.sensors.fused=true"], "member 1: fused sensing"),
        (  # an agent's batches come from acting with the host being trained
            ["workload=cartpole_drifting", "workload.optimizer=sgd"],
            "member 1: its stream acts with the host",
        ),
    ],
)
def test_members_it_cannot_train_are_refused(overrides: list[str], message: str) -> None:
    first = _organisms(1)[0]
    other = build_organism(compose([*_BASE, *overrides]), 1)
    with pytest.raises(CohortError, match=message):
        Cohort([first, other])
    with pytest.raises(CohortError, match="at least one"):
        Cohort([])
