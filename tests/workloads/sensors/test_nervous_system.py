"""The Nervous System end to end: readings on every host, and exact checkpoint continuation."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from esper.seeding import generator
from esper.workloads.hosts import make_host
from esper.workloads.sensors import NervousSystem, SensorConfig, global_state_names

HOSTS = {
    "mlp": ((12,), {"hidden": (10, 8)}),
    "cnn1d": ((2, 12), {"channels": (3, 4), "hidden": 6}),
    "cnn2d": ((1, 8, 8), {"channels": (3, 4), "hidden": 6}),
    "transformer": ((12,), {"token_dim": 4, "d_model": 8, "heads": 2, "ff": 8}),
}


def _setup(kind: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    shape, params = HOSTS[kind]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_host(
            kind.rstrip("12d") if kind.startswith("cnn") else kind, shape, 4, **params
        )
    g = generator(seed, "ns", kind)
    return model, torch.randn(24, *shape, generator=g), torch.randint(0, 4, (24,), generator=g)


def _masks(model: nn.Module, step: int) -> dict[str, torch.Tensor]:
    g = generator(step, "masks")
    return {
        n: torch.rand(p.shape, generator=g) < 0.6 for n, p in model.prunable_parameters().items()
    }


@pytest.mark.parametrize("kind", list(HOSTS))
def test_reading_shapes_and_values(kind: str) -> None:
    model, x, y = _setup(kind)
    system = NervousSystem(SensorConfig(embedding=4))
    system.prepare(model, x)
    masks = _masks(model, 0)
    system.record_masks(masks)
    system.record_masks(_masks(model, 1))
    reading = system.sense(model, x, y, _masks(model, 1))
    layers = list(model.prunable_parameters())
    assert list(reading.observations) == layers
    obs = reading.observation_tensor()
    assert obs.shape == (len(layers), len(system.observation_names))
    assert torch.isfinite(obs).all()
    assert reading.global_state.names == global_state_names(16)
    assert torch.isfinite(reading.global_state.to_tensor()).all()
    first = reading.observations[layers[0]]
    assert first["density"] == pytest.approx(float(_masks(model, 1)[layers[0]].float().mean()))
    assert first["flip_rate"] > 0.0
    assert 0.0 <= first["coherence"] <= 1.0 and 0.0 < first["rank_ratio"] <= 1.0
    assert reading.global_state["L00.present"] == 1.0
    assert reading.global_state[f"L{len(layers):02d}.present"] == 0.0
    assert set(reading.hessian) == set(layers) and set(reading.activity) == set(layers)


def test_checkpoint_continues_exactly() -> None:
    model, x, y = _setup("mlp")
    config = SensorConfig(hutchinson_probes=2, fisher_window=2, embedding=4)
    action = {"prune_fraction": 0.2, "regrow_fraction": 0.1}
    a = NervousSystem(config)
    a.prepare(model, x)
    for step in range(4):
        a.record_masks(_masks(model, step))
        reading = a.sense(model, x[step:], y[step:], _masks(model, step))
        a.record_surgery(reading, "layers.1.weight", action, 0.01 * step)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = NervousSystem(config)
    b.prepare(model, x)
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(4, 7):
        for system in (a, b):
            system.record_masks(_masks(model, step))
        ra = a.sense(model, x, y, _masks(model, step))
        rb = b.sense(model, x, y, _masks(model, step))
        assert torch.equal(ra.observation_tensor(), rb.observation_tensor())
        assert torch.equal(ra.global_state.to_tensor(), rb.global_state.to_tensor())
        for n in ra.hessian:
            assert torch.equal(ra.hessian[n].diagonal, rb.hessian[n].diagonal)
        assert ra.fgsf == rb.fgsf and ra.index == rb.index == step
        for system, reading in ((a, ra), (b, rb)):
            system.record_surgery(reading, "layers.0.weight", action, -0.02)
        assert a.predict_impact(ra, "layers.0.weight", action) == b.predict_impact(
            rb, "layers.0.weight", action
        )


def test_impact_prediction_enters_observations() -> None:
    model, x, y = _setup("mlp")
    system = NervousSystem(SensorConfig(reference_action=(0.3, 0.0), hutchinson_probes=0))
    system.prepare(model, x)
    reading = system.sense(model, x, y)
    assert reading.hessian == {}
    assert all(o["predicted_impact"] == 0.0 for o in reading.observations.values())
    for _ in range(20):
        for frac in (0.1, 0.5):
            action = {"prune_fraction": frac, "regrow_fraction": 0.0}
            system.record_surgery(reading, "layers.0.weight", action, 2.0 * frac)
    reading = system.sense(model, x, y)
    assert reading.observations["layers.0.weight"]["predicted_impact"] > 0.1


def test_a_surgery_is_credited_layer_by_layer_above_a_running_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, x, y = _setup("mlp")
    system = NervousSystem(SensorConfig(hutchinson_probes=0))
    system.prepare(model, x)
    reading = system.sense(model, x, y)
    credited: list[tuple[str, float]] = []
    monkeypatch.setattr(system, "record_surgery", lambda r, n, a, d: credited.append((n, d)))
    a, b, c = (f"layers.{i}.weight" for i in range(3))
    action = {"prune_fraction": 0.1, "regrow_fraction": 0.1}
    # 30 weights changed in a, 10 in b, c untouched: a gets 3/4 of the change, b 1/4.
    system.record_surgeries(reading, {a: action, b: action, c: action}, {a: 30, b: 10}, 0.4)
    assert credited == [(a, pytest.approx(0.3)), (b, pytest.approx(0.1))]
    # The baseline moved to 0.1 · 0.4: the same change again is credited with its excess only.
    credited.clear()
    system.record_surgeries(reading, {a: action}, {a: 5}, 0.4)
    assert credited == [(a, pytest.approx(0.4 - 0.04))]
    credited.clear()
    system.record_surgeries(reading, {a: action}, {a: 5}, float("nan"))  # a diverged interval
    assert credited == []
    assert system.state_dict()["impact_baseline"] == pytest.approx(0.04 + 0.1 * 0.36)


def test_errors_name_the_fix() -> None:
    model, x, y = _setup("mlp")
    system = NervousSystem()
    with pytest.raises(RuntimeError, match="prepare"):
        system.sense(model, x, y)
    with pytest.raises(ValueError, match="max_layers"):
        NervousSystem(SensorConfig(max_layers=2)).prepare(model, x)
    system.prepare(model, x)
    with pytest.raises(KeyError, match="unknown tensors"):
        system.record_masks({"nope": torch.ones(1, dtype=torch.bool)})
    reading = system.sense(model, x, y)
    with pytest.raises(ValueError, match="action features"):
        system.predict_impact(reading, "layers.0.weight", {"prune_fraction": 0.1})
    with pytest.raises(ValueError, match="reference_action"):
        SensorConfig(reference_action=(0.1,))
    other, _, _ = _setup("cnn2d")
    with pytest.raises(ValueError, match="differ from the prepared"):
        system.sense(other, torch.randn(2, 1, 8, 8), y[:2])


@pytest.mark.parametrize("lr", [0.0, 1e-2])
def test_the_topology_encoder_learns_from_surgery_impacts_unless_frozen(lr: float) -> None:
    model, x, y = _setup("mlp")
    system = NervousSystem(SensorConfig(hutchinson_probes=0, gnn_lr=lr))
    system.prepare(model, x)
    assert system.encoder is not None
    before = {k: v.clone() for k, v in system.encoder.state_dict().items()}
    reading = system.sense(model, x, y)
    action = {"prune_fraction": 0.1, "regrow_fraction": 0.1}
    for delta in (0.5, -0.2, 0.8):
        system.record_surgeries(reading, {"layers.0.weight": action}, {"layers.0.weight": 3}, delta)
    after = system.encoder.state_dict()
    moved = any(not torch.equal(before[k], after[k]) for k in before)
    assert moved == (lr > 0)


def test_training_the_encoder_on_impacts_lowers_its_error() -> None:
    from esper.workloads.sensors.impact import train_encoder_on_impact
    from esper.workloads.sensors.topology import TopologyEncoder

    model, x, _ = _setup("mlp")
    system = NervousSystem(SensorConfig(hutchinson_probes=0))
    system.prepare(model, x)
    graph = system.graph
    torch.manual_seed(0)
    encoder = TopologyEncoder(graph.structural_features().shape[1], 8, 4, 2)
    features = graph.structural_features()
    theta = torch.randn(4 + 2 + 1, dtype=torch.float64)
    rows = [(0, torch.tensor([0.1, 0.0]), 1.0), (2, torch.tensor([0.1, 0.0]), -1.0)]
    errors = [
        train_encoder_on_impact(encoder, lambda: encoder(features, graph), rows, theta, 0.1)
        for _ in range(50)
    ]
    assert errors[-1] < 0.5 * errors[0]


def test_hutchinson_every_probes_every_nth_reading_and_holds_the_traces_between() -> None:
    model, x, y = _setup("mlp")
    every = NervousSystem(SensorConfig(hutchinson_every=3, embedding=4))
    always = NervousSystem(SensorConfig(embedding=4))
    for system in (every, always):
        system.prepare(model, x)
    probed, traces = [], []
    for _ in range(7):
        reading = every.sense(model, x, y)
        always.sense(model, x, y)
        probed.append(bool(reading.hessian))
        traces.append(dict(every._hessian_trace))
    assert probed == [True, False, False, True, False, False, True]
    assert traces[1] == traces[2] == traces[0] and traces[4] == traces[3]
    assert traces[3] != traces[2]
    assert every.sense(model, x, y, probes=1).hessian  # an explicit count probes now
    with pytest.raises(ValueError, match="hutchinson_every must be >= 1"):
        SensorConfig(hutchinson_every=0)
