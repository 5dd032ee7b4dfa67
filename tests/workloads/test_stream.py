"""Streams: determinism by seed, exact continuation, task reporting and novelty."""

from __future__ import annotations

import itertools

import pytest
import torch

from esper.workloads import (
    SCHEDULES,
    Abrupt,
    DriftStream,
    NoiseBurst,
    PermuteInputs,
    PoolSource,
    Recurring,
    make_schedule,
)


def _stream(source: PoolSource, seed: int, **kw: object) -> DriftStream:
    return DriftStream(
        source,
        [PermuteInputs(), NoiseBurst(period=7, length=2, phase=3)],
        Abrupt(20),
        16,
        seed,
        **kw,
    )  # type: ignore[arg-type]


def test_same_seed_same_batches_other_seed_other_batches(digits: PoolSource) -> None:
    a, b, c = (_stream(digits, s) for s in (3, 3, 4))
    for _ in range(45):
        ba, bb, bc = a.next_batch(), b.next_batch(), c.next_batch()
        assert torch.equal(ba.x, bb.x) and torch.equal(ba.y, bb.y) and ba.novelty == bb.novelty
    assert not torch.equal(ba.x, bc.x)


def test_state_dict_round_trip_continues_bit_exactly(digits: PoolSource) -> None:
    stream = _stream(digits, 1)
    for _ in range(33):
        stream.next_batch()
    state = stream.state_dict()
    expected = [stream.next_batch() for _ in range(20)]
    fresh = _stream(digits, 1)
    fresh.load_state_dict(state)
    for want in expected:
        got = fresh.next_batch()
        assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y)
        assert (got.step, got.task_index, got.novelty) == (want.step, want.task_index, want.novelty)


def test_loading_state_of_another_seed_is_refused(digits: PoolSource) -> None:
    with pytest.raises(ValueError, match="seed 1"):
        _stream(digits, 2).load_state_dict(_stream(digits, 1).state_dict())


def test_batches_report_task_index_and_drift_name(digits: PoolSource) -> None:
    stream = _stream(digits, 0, num_tasks=3)
    batches = list(stream)
    assert len(batches) == len(stream) == 60
    assert [b.task_index for b in batches[::20]] == [0, 1, 2]
    assert {b.drift for b in batches} == {"permute_inputs+noise_burst"}


def test_novelty_spikes_on_new_distributions_and_stays_low_on_return(digits: PoolSource) -> None:
    stream = DriftStream(
        digits, [PermuteInputs()], Recurring(40, pattern=(0, 1)), 8, 0, num_tasks=3
    )
    novelty = [b.novelty for b in stream]
    assert novelty[0] == 1.0 and novelty[40] == 1.0  # A and B each new once
    assert novelty[39] < 0.05
    assert novelty[80] < 0.05  # A again: already familiar
    assert all(b <= a for a, b in itertools.pairwise(novelty[:40]))


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_builds_and_drives_a_stream(name: str, digits: PoolSource) -> None:
    extra = {"window": 4} if name == "gradual" else {}
    schedule = make_schedule(name, task_length=10, **extra)
    stream = DriftStream(digits, [PermuteInputs()], schedule, 4, 0, num_tasks=3)
    assert len(list(stream)) == 30


def test_stream_without_drift_on_static_source_is_refused(digits: PoolSource) -> None:
    with pytest.raises(ValueError, match="give at least one drift"):
        DriftStream(digits, [], Abrupt(10), 4, 0)


def test_schedule_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="window"):
        make_schedule("gradual", task_length=10, window=20)
    with pytest.raises(ValueError, match="pattern"):
        make_schedule("recurring", pattern=(0,))
