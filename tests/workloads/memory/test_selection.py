"""Each selection rule on hand-made candidates whose right selection is known."""

from __future__ import annotations

import pytest
import torch

from esper.registry import UnknownNameError
from esper.workloads.memory import SELECTIONS, Candidates, make_selection


def _candidates(y, key=None, forgets=None, margin=None, embedding=None) -> Candidates:
    n = len(y)
    return Candidates(
        y=torch.tensor(y),
        key=torch.tensor(key if key is not None else [0.5] * n, dtype=torch.float32),
        forgets=torch.tensor(forgets if forgets is not None else [0] * n),
        margin=torch.tensor(margin if margin is not None else [0.0] * n),
        embedding=None if embedding is None else torch.tensor(embedding, dtype=torch.float32),
    )


def test_reservoir_keeps_the_largest_arrival_keys():
    c = _candidates([0, 1, 2, 3, 4], key=[0.1, 0.9, 0.4, 0.7, 0.2])
    assert make_selection("reservoir").select(c, 2).tolist() == [1, 3]


def test_reservoir_keys_give_a_uniform_sample():
    """Keeping the k largest of uniform keys keeps each of n samples with probability k/n."""
    gen = torch.Generator().manual_seed(0)
    kept = torch.zeros(20)
    rule = make_selection("reservoir")
    for _ in range(2000):
        key = torch.rand(20, generator=gen)
        c = Candidates(torch.zeros(20, dtype=torch.long), key, torch.zeros(20), torch.zeros(20))
        kept[rule.select(c, 5)] += 1
    assert torch.allclose(kept / 2000, torch.full((20,), 0.25), atol=0.04)


def test_class_balanced_gives_each_class_an_equal_share():
    # eight of class 0, two of class 1, three of class 2: six slots → 2 + 2 + 2
    y = [0] * 8 + [1] * 2 + [2] * 3
    key = [0.1 * i for i in range(8)] + [0.5, 0.6] + [0.9, 0.2, 0.3]
    chosen = make_selection("class_balanced").select(_candidates(y, key), 6)
    assert sorted(torch.tensor(y)[chosen].tolist()) == [0, 0, 1, 1, 2, 2]
    assert {6, 7} <= set(chosen.tolist())  # class 0's two largest keys
    assert {10, 12} <= set(chosen.tolist())  # class 2's two largest keys


def test_class_balanced_fills_from_the_others_when_a_class_runs_out():
    y = [0] * 6 + [1]
    chosen = make_selection("class_balanced").select(_candidates(y), 5)
    assert sorted(torch.tensor(y)[chosen].tolist()) == [0, 0, 0, 0, 1]


def test_class_balanced_counts_forced_samples_in_the_balance():
    y = [0, 0, 0, 1, 1, 1]
    forced = torch.tensor([True, True, False, False, False, False])
    chosen = make_selection("class_balanced").select(_candidates(y), 4, forced)
    assert sorted(torch.tensor(y)[chosen].tolist()) == [0, 0, 1, 1]
    assert {0, 1} <= set(chosen.tolist())


def test_forgetting_keeps_the_most_forgotten_then_the_smallest_margin():
    c = _candidates(
        [0, 0, 0, 0, 0],
        key=[0.9, 0.8, 0.7, 0.6, 0.5],
        forgets=[0, 3, 1, 1, 0],
        margin=[-2.0, 1.0, 0.5, -0.5, 0.0],
    )
    # 1 (3 events), then 3 (1 event, margin −0.5) before 2 (1 event, margin 0.5)
    assert make_selection("forgetting").select(c, 2).tolist() == [1, 3]
    assert make_selection("forgetting").select(c, 3).tolist() == [1, 2, 3]


def test_gradient_coreset_takes_one_sample_per_cluster():
    """Three tight clusters of gradient embeddings and three slots: facility location covers
    each cluster with one of its own (two from one cluster would leave another uncovered)."""
    embedding = [
        [0.0, 0.0], [0.1, 0.0], [-0.1, 0.0],  # cluster A, centre 0
        [5.0, 5.0], [5.1, 5.0], [4.9, 5.0],  # cluster B, centre 3
        [0.0, 9.0], [0.0, 9.1], [0.0, 8.9],  # cluster C, centre 6
    ]  # fmt: skip
    c = _candidates([0] * 9, embedding=embedding)
    chosen = make_selection("gradient").select(c, 3)
    assert sorted((chosen // 3).tolist()) == [0, 1, 2]


def test_gradient_coreset_skips_what_forced_samples_already_cover():
    embedding = [[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]]
    forced = torch.tensor([True, False, False, False])
    chosen = make_selection("gradient").select(_candidates([0] * 4, embedding=embedding), 2, forced)
    assert chosen[0] == 0 and int(chosen[1]) in (2, 3)


@pytest.mark.parametrize("name", SELECTIONS.names())
def test_every_rule_keeps_forced_samples_and_exactly_k(name):
    gen = torch.Generator().manual_seed(1)
    n = 30
    c = Candidates(
        y=torch.randint(3, (n,), generator=gen),
        key=torch.rand(n, generator=gen),
        forgets=torch.randint(3, (n,), generator=gen),
        margin=torch.randn(n, generator=gen),
        embedding=torch.randn(n, 4, generator=gen),
    )
    forced = torch.zeros(n, dtype=torch.bool)
    forced[[2, 17]] = True
    chosen = make_selection(name).select(c, 10, forced)
    assert chosen.numel() == 10 == chosen.unique().numel()
    assert {2, 17} <= set(chosen.tolist())
    assert make_selection(name).select(c, 40).tolist() == list(range(n))


def test_bad_selections_are_refused_by_name():
    with pytest.raises(UnknownNameError, match="valid selections: class_balanced"):
        make_selection("newest")
    with pytest.raises(ValueError, match="do not fit"):
        make_selection("reservoir").select(_candidates([0, 1, 2]), 1, torch.tensor([1, 1, 0]))
    with pytest.raises(ValueError, match="needs gradient embeddings"):
        make_selection("gradient").select(_candidates([0, 1, 2]), 1)
