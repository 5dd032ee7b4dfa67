"""Specialist actions: rank mixing, exact-k swaps, the discrete table, decoding on an organism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esper.conf import compose
from esper.policies.emrakul import actions
from esper.policies.emrakul.actions import (
    N_DISCRETE_ACTIONS,
    PRUNE_CRITERIA,
    REGROW_CRITERIA,
    SpecialistAction,
    decode_discrete,
    layer_action,
    mixed_scores,
    rank_normalise,
    stable_order,
    swap_counts,
)
from esper.policies.scores import weight_scores
from esper.seeding import generator
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep
from tests.organisms import TINY_ORGANISM

_BASE = TINY_ORGANISM


@pytest.fixture(scope="module")
def organism() -> tuple[Organism, OrganismStep]:
    org = build_organism(compose(_BASE))
    return org, org.reset()


def test_rank_normalise_is_order_preserving_in_unit_interval() -> None:
    x = torch.tensor([3.0, -1.0, 10.0, 0.5, float("nan")])
    r = rank_normalise(x)
    assert r.tolist() == pytest.approx([0.75, 0.25, 1.0, 0.5, 0.0])


def test_rank_normalise_breaks_ties_by_position_and_ranks_non_finite_lowest() -> None:
    x = torch.tensor([0.0, 2.0, -0.0, float("inf"), 0.0, -float("inf"), 2.0])
    # the non-finite entries rank lowest, by position; the zeros (-0.0 among them) by position
    assert (rank_normalise(x) * 6).tolist() == [2.0, 5.0, 3.0, 0.0, 4.0, 1.0, 6.0]
    assert rank_normalise(torch.tensor([4.0])).tolist() == [0.0]
    assert rank_normalise(torch.arange(6).view(2, 3)).dtype == torch.float32


@pytest.mark.parametrize("n", [7, 4095, 4096, 20000])
def test_stable_order_is_a_stable_comparison_sort(n: int) -> None:
    rng = np.random.default_rng(n)
    for values in (
        rng.standard_normal(n).astype(np.float32),
        (rng.standard_normal(n) * (rng.random(n) < 0.1)).astype(np.float32),  # mostly ties
        rng.integers(0, 5, n).astype(np.float32),
        np.float32([-0.0, 0.0, -np.inf, np.inf, 1e-45, -1e-45, 3.0] * (n // 7 + 1))[:n],
    ):
        np.testing.assert_array_equal(stable_order(values), np.argsort(values, kind="stable"))


def test_a_layer_decision_ranks_each_score_once(
    organism: tuple[Organism, OrganismStep], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruning and regrowth share the gradient scores (and with the ``masked`` mechanism the
    accumulated ones are the same): ranked once, the decision is unchanged."""
    org, step = organism
    name = org.scalpel.names[0]
    action = SpecialistAction(  # every criterion of both mixes in use
        turnover=0.2,
        tau=0.1,
        prune_mix=(1.0,) * len(PRUNE_CRITERIA),
        regrow_mix=(1.0,) * len(REGROW_CRITERIA),
    )
    with monkeypatch.context() as patched:  # the reference: no memo, no shared scores
        plain_mix, plain_sources = actions.mixed_scores, actions._regrow_sources
        patched.setattr(actions, "mixed_scores", lambda s, c, m, ranked=None: plain_mix(s, c, m))
        patched.setattr(actions, "_regrow_sources",
                        lambda o, st, n, g, gradient=None: plain_sources(o, st, n, g))  # fmt: skip
        reference = layer_action(action, org, step, name, generator(5, "once"))
    ranked: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        ranked.append(x.numel())
        return rank_normalise(x)

    monkeypatch.setattr(actions, "rank_normalise", counting)
    out = layer_action(action, org, step, name, generator(5, "once"))
    distinct = len(set(PRUNE_CRITERIA) | set(REGROW_CRITERIA)) - 1  # accumulated = gradient
    assert len(ranked) == distinct
    assert torch.equal(torch.as_tensor(out.prune), torch.as_tensor(reference.prune))
    assert torch.equal(torch.as_tensor(out.regrow), torch.as_tensor(reference.regrow))


def test_mixed_scores_weights_ranks() -> None:
    scores = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([30.0, 20.0, 10.0])}
    assert mixed_scores(scores, ("a", "b"), (1.0, 0.0)).tolist() == [0.0, 0.5, 1.0]
    assert mixed_scores(scores, ("a", "b"), (0.5, 0.5)).tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    ("active", "numel", "turnover", "target", "expected"),
    [
        (100, 1000, 0.1, None, (10, 10)),  # pure swap
        (100, 1000, 0.1, 150, (10, 60)),  # the General raised the budget
        (100, 1000, 0.1, 70, (40, 10)),  # ... or lowered it
        (100, 100, 0.3, None, (30, 30)),  # dense layer: swap among just-dropped weights
        (100, 1000, 0.0, 0, (100, 0)),
    ],
)
def test_swap_counts(
    active: int, numel: int, turnover: float, target: int | None, expected: tuple[int, int]
) -> None:
    drop, grow = swap_counts(active, numel, turnover, target)
    assert (drop, grow) == expected
    assert active - drop + grow == (active if target is None else target)


def test_action_validation_and_simplex() -> None:
    a = SpecialistAction(turnover=0.2, prune_mix=(2.0, 2.0, 0.0, 0.0, 0.0))
    assert a.prune_mix == (0.5, 0.5, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="turnover"):
        SpecialistAction(turnover=1.5)
    with pytest.raises(ValueError, match="prune_mix"):
        SpecialistAction(prune_mix=(1.0, 0.0))
    with pytest.raises(ValueError, match="sedation"):
        SpecialistAction(sedation=0.0)


def test_discrete_table() -> None:
    assert 20 <= N_DISCRETE_ACTIONS <= 40
    assert decode_discrete(0).turnover == 0.0
    seen = {(a.turnover, a.prune_mix, a.regrow_mix, a.sedation, a.tau, a.heat, a.forget)
            for a in map(decode_discrete, range(N_DISCRETE_ACTIONS))}  # fmt: skip
    assert len(seen) == N_DISCRETE_ACTIONS
    table = [decode_discrete(i) for i in range(N_DISCRETE_ACTIONS)]
    assert any(a.heat for a in table) and any(a.forget for a in table)  # QMIX can heat, forget
    assert len({a.tau for a in table if a.turnover > 0}) == 2  # and choose its temperature
    with pytest.raises(IndexError):
        decode_discrete(N_DISCRETE_ACTIONS)


def test_deterministic_magnitude_gradient_action_is_rigl(
    organism: tuple[Organism, OrganismStep],
) -> None:
    """τ = 0, pure magnitude drop and gradient growth: exactly RigL's selection."""
    org, step = organism
    name = org.scalpel.names[0]
    action = SpecialistAction(turnover=0.2, tau=0.0)
    out = layer_action(action, org, step, name, generator(0, "t"))
    mask = org.scalpel.mask(name).reshape(-1)
    w = dict(org.host.named_parameters())[name].detach().reshape(-1).abs()
    g = org.scalpel.dense_grad(name).reshape(-1).abs()
    k = round(0.2 * int(mask.sum()))
    active, inactive = mask.nonzero().view(-1), (~mask).nonzero().view(-1)
    drop = set(active[torch.argsort(w[active], stable=True)[:k]].tolist())
    grow = set(inactive[torch.argsort(g[inactive], descending=True, stable=True)[:k]].tolist())
    assert set(torch.as_tensor(out.prune).tolist()) == drop
    assert set(torch.as_tensor(out.regrow).tolist()) == grow
    assert out.tau is None and out.sedation_steps == 0


@pytest.mark.parametrize("prune", PRUNE_CRITERIA)
@pytest.mark.parametrize("regrow", REGROW_CRITERIA)
def test_every_criterion_decodes_to_exact_k(
    organism: tuple[Organism, OrganismStep], prune: str, regrow: str
) -> None:
    org, step = organism
    name = org.scalpel.names[1]
    action = SpecialistAction(
        turnover=0.25,
        prune_mix=tuple(float(c == prune) for c in PRUNE_CRITERIA),
        regrow_mix=tuple(float(c == regrow) for c in REGROW_CRITERIA),
        tau=0.5,
        sedation=0.5,
        sedation_steps=3,
    )
    mask = org.scalpel.mask(name).reshape(-1)
    k = round(0.25 * int(mask.sum()))
    out = layer_action(action, org, step, name, generator(1, prune, regrow), target=None)
    prune_idx, regrow_idx = torch.as_tensor(out.prune), torch.as_tensor(out.regrow)
    assert prune_idx.numel() == regrow_idx.numel() == k
    assert mask[prune_idx].all() and not mask[regrow_idx].any()
    assert len(set(prune_idx.tolist())) == k and len(set(regrow_idx.tolist())) == k
    assert out.sedation == 0.5 and out.sedation_steps == 3


def test_mixed_prune_scores_follow_the_mix(organism: tuple[Organism, OrganismStep]) -> None:
    org, step = organism
    name = org.scalpel.names[0]
    mask = org.scalpel.mask(name).reshape(-1)
    scores = weight_scores(org, step, name, generator(0, "s"), ("fisher",))
    action = SpecialistAction(turnover=0.1, prune_mix=(0.0, 0.0, 1.0, 0.0, 0.0), tau=0.0)
    out = layer_action(action, org, step, name, generator(2, "m"))
    ranks = rank_normalise(scores["fisher"])
    dropped = ranks[torch.as_tensor(out.prune)]
    kept = ranks[mask & ~torch.isin(torch.arange(mask.numel()), torch.as_tensor(out.prune))]
    assert float(dropped.max()) <= float(kept.min())


def test_target_changes_density_exactly(organism: tuple[Organism, OrganismStep]) -> None:
    org, step = organism
    name = org.scalpel.names[0]
    active = int(org.scalpel.mask(name).sum())
    for target in (active + 37, active - 23):
        out = layer_action(SpecialistAction(turnover=0.1, tau=0.1), org, step, name,
                           generator(3, target), target=target)  # fmt: skip
        assert active - len(out.prune) + len(out.regrow) == target
