"""Every source × drift × schedule composes into a stream that runs, or is refused by name.

A property test: hypothesis draws the three names and the stream's sizes (batch, task length,
blend window, seed). A composition either yields every batch with the source's shapes and
finite inputs (through the transitions, where a gradual schedule draws a batch from two
distributions and one share can be empty), or is refused when the stream is built, with a
``ValueError`` naming both the drift and the dataset. Nothing may fail while the stream runs.
"""

from __future__ import annotations

import functools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esper.workloads import DriftStream, make_drift, make_schedule, make_source
from esper.workloads.datasets import SOURCES, Source
from esper.workloads.drift import DRIFTS
from esper.workloads.schedules import SCHEDULES

_SMALL = {"mnist1d": {"num_samples": 400}, "gaussian_mixture": {"num_samples": 400}}


@functools.cache
def _source(name: str) -> Source:
    return make_source(name, **_SMALL.get(name, {}))


@st.composite
def _schedules(draw: st.DrawFn) -> tuple[str, dict[str, int]]:
    name = draw(st.sampled_from(SCHEDULES.names()))
    task_length = draw(st.integers(2, 12))
    if name == "abrupt":
        return name, {"task_length": task_length}
    return name, {"task_length": task_length, "window": draw(st.integers(0, task_length))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.sampled_from(SOURCES.names()),
    drift=st.sampled_from(DRIFTS.names()),
    schedule=_schedules(),
    batch_size=st.integers(1, 9),
    num_tasks=st.integers(2, 4),
    seed=st.integers(0, 2**16),
)
def test_every_composition_runs_or_is_refused_by_name(
    source: str,
    drift: str,
    schedule: tuple[str, dict[str, int]],
    batch_size: int,
    num_tasks: int,
    seed: int,
) -> None:
    data = _source(source)
    try:
        stream = DriftStream(
            data, [make_drift(drift)], make_schedule(schedule[0], **schedule[1]), batch_size,
            seed=seed, num_tasks=num_tasks,
        )  # fmt: skip
    except ValueError as refusal:
        assert f"'{drift}'" in str(refusal) and f"'{source}'" in str(refusal), str(refusal)
        return
    batches = list(stream)
    assert len(batches) == schedule[1]["task_length"] * num_tasks
    first_y = batches[0].y
    for batch in batches:
        assert batch.x.shape == (batch_size, *data.input_shape)
        assert batch.y.shape == (batch_size, *first_y.shape[1:]) and batch.y.dtype == first_y.dtype
        assert torch.isfinite(batch.x).all()
        assert 0 <= batch.task_index < num_tasks
