"""A Reading checkpoints as plain data that loads with ``weights_only=True`` and names no class
outside the sensor dataclasses."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from esper.workloads.sensors import NervousSystem, Reading, SensorConfig
from tests.workloads.sensors.test_nervous_system import _masks, _setup


@pytest.fixture(scope="module")
def reading() -> Reading:
    """A reading with every sensor: gradients, Hessian probes, activity and flip-flops."""
    model, x, y = _setup("mlp")
    system = NervousSystem(SensorConfig(hutchinson_probes=2, embedding=4))
    system.prepare(model, x)
    system.record_masks(_masks(model, 0))
    system.record_masks(_masks(model, 1))
    out = system.sense(model, x, y, _masks(model, 1))
    assert out.hessian and out.flipflop and out.activity and out.impact_inputs
    return out


def _reload(state: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_round_trip_through_a_weights_only_load_gives_an_equal_reading(reading: Reading) -> None:
    back = Reading.from_state_dict(_reload(reading.state_dict()))
    assert isinstance(back, Reading)
    assert list(back.observations) == list(reading.observations)
    assert torch.equal(back.observation_tensor(), reading.observation_tensor())
    assert all(back.observations[n].layer == n for n in reading.observations)
    assert back.global_state.names == reading.global_state.names
    assert torch.equal(back.global_state.to_tensor(), reading.global_state.to_tensor())
    assert list(back.gradients.layers) == list(reading.gradients.layers)
    for name, stats in reading.gradients.layers.items():
        got = back.gradients.layers[name]
        for f in ("mean", "fisher", "gsnr"):
            assert torch.equal(getattr(got, f), getattr(stats, f)), (name, f)
        assert (got.fisher_trace, got.gsnr_mean, got.coherence, got.active) == (
            stats.fisher_trace,
            stats.gsnr_mean,
            stats.coherence,
            stats.active,
        )
    assert torch.equal(back.gradients.losses, reading.gradients.losses)
    for name, hessian in reading.hessian.items():
        assert back.hessian[name].trace == hessian.trace
        assert torch.equal(back.hessian[name].diagonal, hessian.diagonal)
    for name, flip in reading.flipflop.items():
        assert back.flipflop[name].flip_rate == flip.flip_rate
        assert torch.equal(back.flipflop[name].flips, flip.flips)
    assert back.fgsf == reading.fgsf
    assert torch.equal(back.embeddings, reading.embeddings)
    assert (back.loss, back.index) == (reading.loss, reading.index)


def test_the_state_holds_copies_of_the_tensors(reading: Reading) -> None:
    features = reading.node_features.clone()
    reading.state_dict()["node_features"].add_(1.0)
    assert torch.equal(reading.node_features, features)


def test_a_state_naming_another_class_is_refused(reading: Reading) -> None:
    state = _reload(reading.state_dict())
    state["fgsf"]["__dataclass__"] = "Popen"
    with pytest.raises(ValueError, match=r"class 'Popen'; allowed: \[.*'Reading'"):
        Reading.from_state_dict(state)


def test_a_state_of_another_sensor_dataclass_is_not_a_reading(reading: Reading) -> None:
    with pytest.raises(ValueError, match="does not hold a sensor Reading"):
        Reading.from_state_dict(reading.state_dict()["fgsf"])
