"""EventBuilder: a surgical event's columns come from the context, the masks and the reading."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch

from esper.workloads.organism import Organism
from esper.workloads.sensors import Reading
from esper.workloads.surgical_events import EventBuilder, EventContext, sensor_fields
from tests.workloads.test_organism import _organism

SENSOR_COLUMNS = ("fisher_trace", "gsnr", "hessian_trace", "flip_rate")


@pytest.fixture(scope="module")
def stepped() -> tuple[Organism, Reading]:
    """A Gumbel-softmax organism after one surgery, and its reading (which has every sensor)."""
    org = _organism(
        "workload=gaussian_covariate",
        "policy.surgery_interval=2",
        "workload.organism.spike_window=1",
        "workload.scalpel.mechanism.name=gumbel_softmax",
    )
    org.reset()
    reading = org.step({}).reading
    org.scalpel.set_temperature(org.scalpel.names[1], 0.375)
    return org, reading


@pytest.fixture
def organism(stepped: tuple[Organism, Reading]) -> Organism:
    return stepped[0]


@pytest.fixture
def reading(stepped: tuple[Organism, Reading]) -> Reading:
    return stepped[1]


def _context(reading: Reading | None) -> EventContext:
    return EventContext(
        drift="covariate_shift",
        task_index=2,
        sgd_step=17,
        surgery_step=4,
        acc_before=0.625,
        loss_before=1.25,
        reading=reading,
    )


def test_an_event_takes_its_columns_from_context_masks_and_reading(
    organism: Organism, reading: Reading
) -> None:
    name = organism.scalpel.names[1]
    builder = EventBuilder(organism.scalpel, "run-a", "trial-b", 3)
    start = time.time()
    event = builder.event(
        _context(reading), name, "prune", torch.tensor([[7], [2], [5]]), value=0.5
    )
    assert (event.run_id, event.trial_id, event.replica_id) == ("run-a", "trial-b", 3)
    assert (event.drift, event.task_index, event.sgd_step, event.surgery_step) == (
        "covariate_shift",
        2,
        17,
        4,
    )
    assert (event.layer, event.action, event.value) == (name, "prune", 0.5)
    assert (event.acc_before, event.loss_before) == (0.625, 1.25)
    assert event.indices == [7, 2, 5] and event.count == 3
    assert event.density_after == organism.scalpel.density(name)
    assert event.density_before == event.density_after
    assert event.tau == 0.375
    stats = reading.gradients.layers[name]
    assert (event.fisher_trace, event.gsnr) == (stats.fisher_trace, stats.gsnr_mean)
    assert event.hessian_trace == reading.hessian[name].trace
    assert event.flip_rate == reading.flipflop[name].flip_rate
    assert start <= event.wall_time <= time.time()


def test_density_before_is_recorded_when_given(organism: Organism) -> None:
    name = organism.scalpel.names[0]
    builder = EventBuilder(organism.scalpel, "r", "t", 0)
    event = builder.event(_context(None), name, "regrow", torch.tensor([1]), density_before=0.75)
    assert event.density_before == 0.75
    assert event.density_after == organism.scalpel.density(name) != 0.75


@pytest.mark.parametrize("indices", [None, torch.tensor([], dtype=torch.int64)])
def test_an_action_on_no_weights_has_count_zero_and_nan_value(
    organism: Organism, indices: torch.Tensor | None
) -> None:
    builder = EventBuilder(organism.scalpel, "r", "t", 0)
    event = builder.event(_context(None), organism.scalpel.names[0], "sedate", indices)
    assert event.indices == [] and event.count == 0
    assert math.isnan(event.value)


def test_an_organism_wide_event_has_global_density_and_no_layer_values(
    organism: Organism, reading: Reading
) -> None:
    builder = EventBuilder(organism.scalpel, "r", "t", 0)
    event = builder.event(_context(reading), "", "quarantine")
    assert event.density_after == organism.scalpel.global_density()
    assert all(math.isnan(getattr(event, c)) for c in ("tau", *SENSOR_COLUMNS))


def test_a_mechanism_without_temperature_gives_nan_tau() -> None:
    org = _organism("workload=gaussian_covariate", "workload.scalpel.mechanism.name=masked")
    event = EventBuilder(org.scalpel, "r", "t", 0).event(_context(None), "layers.0.weight", "prune")
    assert math.isnan(event.tau)


def test_sensor_fields_read_each_sensor_of_the_layer(organism: Organism, reading: Reading) -> None:
    name = organism.scalpel.names[2]
    assert sensor_fields(reading, name) == {
        "fisher_trace": reading.gradients.layers[name].fisher_trace,
        "gsnr": reading.gradients.layers[name].gsnr_mean,
        "hessian_trace": reading.hessian[name].trace,
        "flip_rate": reading.flipflop[name].flip_rate,
    }


def test_sensor_fields_are_nan_where_the_reading_lacks_the_layer(
    organism: Organism, reading: Reading
) -> None:
    name = organism.scalpel.names[0]
    no_probes = dataclasses.replace(reading, hessian={}, flipflop={})
    fields = sensor_fields(no_probes, name)
    assert fields["fisher_trace"] == reading.gradients.layers[name].fisher_trace
    assert math.isnan(fields["hessian_trace"]) and math.isnan(fields["flip_rate"])
    no_gradients = dataclasses.replace(
        reading, gradients=dataclasses.replace(reading.gradients, layers={})
    )
    fields = sensor_fields(no_gradients, name)
    assert math.isnan(fields["fisher_trace"]) and math.isnan(fields["gsnr"])
    assert fields["hessian_trace"] == reading.hessian[name].trace


@pytest.mark.parametrize(
    ("with_reading", "layer"),
    [(False, "layers.0.weight"), (True, ""), (True, "nope.weight")],
    ids=["no-reading", "organism-wide", "unknown-layer"],
)
def test_sensor_fields_are_all_nan_without_a_reading_or_a_known_layer(
    reading: Reading, with_reading: bool, layer: str
) -> None:
    fields = sensor_fields(reading if with_reading else None, layer)
    assert set(fields) == set(SENSOR_COLUMNS)
    assert all(math.isnan(v) for v in fields.values())
