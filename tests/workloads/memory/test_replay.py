"""The replay buffer: mixing, forgetting events, refreshes, locks and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from esper.workloads.memory import DataAction, Memory
from esper.workloads.stream import Batch


def _batch(y: list[int], step: int = 0) -> Batch:
    y_t = torch.tensor(y)
    x = y_t.float()[:, None].repeat(1, 3)  # a sample's input encodes its label
    return Batch(x, y_t, step, 0, 0, "none", 0.0, 0.0)


def _logits(y: torch.Tensor, correct: torch.Tensor, classes: int = 4) -> torch.Tensor:
    """Outputs that classify row i right iff ``correct[i]`` (margin 1 or −1)."""
    out = torch.zeros(len(y), classes)
    wrong = (y + 1) % classes
    out[torch.arange(len(y)), torch.where(correct, y, wrong)] = 1.0
    return out


def _fill(memory: Memory, labels: list[int]) -> None:
    batch = _batch(labels)
    mixed = memory.mix(batch)
    memory.observe(mixed, _logits(mixed.y, torch.ones(len(mixed.y), dtype=torch.bool)))
    memory.refresh()


def test_an_empty_memory_mixes_nothing_and_stages_the_stream():
    memory = Memory(8, (3,), 4, replay_ratio=1.0)
    batch = _batch([0, 1, 2])
    assert memory.mix(batch) is batch
    memory.observe(batch, _logits(batch.y, torch.ones(3, dtype=torch.bool)))
    report = memory.refresh()
    assert len(memory) == 3 and report.added == {0: 1, 1: 1, 2: 1} and report.evicted == {}
    assert memory.seen.tolist() == [1, 1, 1, 0]


def test_mix_appends_replayed_members_after_the_stream_rows():
    memory = Memory(8, (3,), 4, replay_ratio=2.0)
    _fill(memory, [0, 1, 2, 3])
    mixed = memory.mix(_batch([1, 1]))
    assert mixed.x.shape[0] == 6 and mixed.y[:2].tolist() == [1, 1]
    assert torch.equal(mixed.x[2:, 0], mixed.y[2:].float())  # replayed rows are whole samples
    assert sorted(mixed.y[2:].tolist()) == [0, 1, 2, 3]  # 4 ≤ size: drawn without replacement


def test_a_replayed_sample_right_then_wrong_counts_one_forgetting_event():
    memory = Memory(4, (3,), 4, replay_ratio=1.0)
    _fill(memory, [0, 1, 2, 3])  # all classified right on arrival
    mixed = memory.mix(_batch([0, 0, 0, 0]))
    wrong_label = 2
    correct = mixed.y != wrong_label
    correct[:4] = True
    memory.observe(mixed, _logits(mixed.y, correct))
    labels = memory.buf["y"][:4].tolist()
    forgets = dict(zip(labels, memory.buf["forgets"][:4].tolist(), strict=True))
    assert forgets == {0: 0, 1: 0, 2: 1, 3: 0}
    margin = dict(zip(labels, memory.buf["margin"][:4].tolist(), strict=True))
    assert margin[2] == -1.0 and margin[0] == 1.0


def test_refresh_replaces_at_most_the_fraction_up_for_it():
    memory = Memory(10, (3,), 4, strategy="forgetting", seed=3)
    _fill(memory, [0] * 10)
    batch = _batch([1] * 10)
    mixed = memory.mix(batch)
    memory.observe(mixed, _logits(mixed.y, mixed.y == 0))  # the new ones are wrong: margin −1
    report = memory.refresh(DataAction(refresh=0.3))
    assert len(memory) == 10
    assert report.evicted == {0: 3} and report.added == {1: 3}
    assert memory.seen.tolist() == [10, 10, 0, 0]


def test_refresh_zero_keeps_every_member():
    memory = Memory(4, (3,), 4)
    _fill(memory, [0, 0, 0, 0])
    mixed = memory.mix(_batch([3, 3]))
    memory.observe(mixed, _logits(mixed.y, torch.ones(len(mixed.y), dtype=torch.bool)))
    report = memory.refresh(DataAction(refresh=0.0))
    assert memory.buf["y"][:4].tolist() == [0, 0, 0, 0] and report.added == {}


def test_locked_members_survive_a_refresh_that_would_evict_them():
    memory = Memory(4, (3,), 4, strategy="class_balanced", seed=0)
    _fill(memory, [2, 2, 2, 2])
    mixed = memory.mix(_batch([0, 1, 3, 0, 1, 3]))
    memory.observe(mixed, _logits(mixed.y, torch.ones(len(mixed.y), dtype=torch.bool)))
    locked = torch.tensor([True, True, False, False])
    report = memory.refresh(locked=locked)
    labels = memory.buf["y"][:4].tolist()
    assert labels.count(2) == 2 and report.locked == {2: 2} and report.evicted == {2: 2}


def test_gradient_rule_needs_an_embedder():
    memory = Memory(2, (3,), 4, strategy="gradient")
    _fill(memory, [0, 1])  # the buffer is not full: nothing competes, no embedding asked
    batch = _batch([2, 3, 2])
    mixed = memory.mix(batch)
    memory.observe(mixed, _logits(mixed.y, torch.ones(len(mixed.y), dtype=torch.bool)))
    with pytest.raises(ValueError, match="needs an embed function"):
        memory.refresh()


def test_the_state_round_trips_and_continues_identically():
    def run(memory: Memory, steps: range) -> list[list[int]]:
        seen = []
        for s in steps:
            mixed = memory.mix(_batch([s % 4, (s + 1) % 4, (s + 2) % 4], step=s))
            memory.observe(mixed, _logits(mixed.y, mixed.y % 2 == 0))
            seen.append(mixed.y.tolist())
            if s % 3 == 2:
                memory.refresh(DataAction(refresh=0.5, strategy="forgetting"))
        return seen

    a = Memory(6, (3,), 4, seed=7)
    run(a, range(7))
    b = Memory(6, (3,), 4, seed=7)
    b.load_state_dict(a.state_dict())
    assert run(a, range(7, 15)) == run(b, range(7, 15))
    assert torch.equal(a.buf["forgets"], b.buf["forgets"])


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="capacity"):
        Memory(0, (3,), 4)
    with pytest.raises(ValueError, match="replay_ratio"):
        Memory(4, (3,), 4, replay_ratio=-1)
    with pytest.raises(KeyError, match="valid selections"):
        Memory(4, (3,), 4, strategy="newest")
    with pytest.raises(ValueError, match="refresh"):
        DataAction(refresh=1.5).validate()
    assert math.isnan(Memory(4, (3,), 4).buf["margin"][0])
