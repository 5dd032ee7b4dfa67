"""The surgery-impact predictor and the named observation / global-state tensors."""

from __future__ import annotations

import pytest
import torch

from esper.seeding import generator
from esper.workloads.sensors import (
    GLOBAL_FEATURES,
    LAYER_FEATURES,
    GlobalState,
    ImpactPredictor,
    Observation,
    global_state_names,
    observation_names,
)


def test_impact_predictor_learns_linear_relation_online() -> None:
    g = generator(0, "impact")
    true_w = torch.randn(6, generator=g, dtype=torch.float64)
    predictor = ImpactPredictor(6, forgetting=1.0)
    errors = []
    for _ in range(200):
        x = torch.randn(6, generator=g, dtype=torch.float64)
        y = float(x @ true_w + 0.3) + 0.01 * float(torch.randn(1, generator=g))
        errors.append(abs(float(predictor.predict(x)) - y))
        predictor.update(x, y)
    assert sum(errors[:10]) / 10 > 0.5
    assert sum(errors[-50:]) / 50 < 0.03
    torch.testing.assert_close(predictor.theta[:6], true_w, atol=0.01, rtol=0)
    assert float(predictor.theta[6]) == pytest.approx(0.3, abs=0.01)
    assert predictor.predict(torch.zeros(3, 6)).shape == (3,)


def test_impact_predictor_follows_a_drift_and_round_trips() -> None:
    g = generator(1, "impact")
    predictor = ImpactPredictor(2, forgetting=0.9)
    xs = torch.randn(120, 2, generator=g, dtype=torch.float64)
    predictor.update(xs[:60], xs[:60] @ torch.tensor([1.0, -1.0], dtype=torch.float64))
    clone = ImpactPredictor(2, forgetting=0.9)
    clone.load_state_dict(predictor.state_dict())
    after = xs[60:] @ torch.tensor([-2.0, 0.5], dtype=torch.float64)  # the relation changes
    predictor.update(xs[60:], after)
    clone.update(xs[60:], after)
    assert torch.equal(predictor.theta, clone.theta) and torch.equal(predictor.p, clone.p)
    new_w = torch.tensor([-2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(predictor.theta[:2], new_w, atol=0.02, rtol=0)
    with pytest.raises(ValueError, match="impact features"):
        predictor.predict(torch.zeros(3))


def test_observation_and_global_state_names() -> None:
    names = observation_names(4)
    assert names[: len(LAYER_FEATURES)] == LAYER_FEATURES and names[-1] == "topo_3"
    obs = Observation(names, torch.arange(len(names), dtype=torch.float32), "layers.0.weight")
    assert obs.width == len(LAYER_FEATURES) + 4
    assert obs["coherence"] == float(LAYER_FEATURES.index("coherence"))
    more = obs.extended({"loss_trend_local": 0.5})
    assert more.names[-1] == "loss_trend_local" and more.to_tensor()[-1] == 0.5
    assert more.layer == "layers.0.weight"
    with pytest.raises(ValueError, match="drift novelty"):
        obs.extended({"drift_novelty": 1.0})
    with pytest.raises(ValueError, match="duplicate"):
        obs.extended({"density": 1.0})
    with pytest.raises(KeyError, match="no feature"):
        obs["nope"]
    gnames = global_state_names(3)
    assert gnames[0] == "L00.present" and gnames[-len(GLOBAL_FEATURES) :] == GLOBAL_FEATURES
    state = GlobalState(gnames, torch.zeros(len(gnames)))
    with pytest.raises(ValueError, match="drift novelty"):
        state.extended({"Novelty": 1.0})
    with pytest.raises(ValueError, match="values of shape"):
        GlobalState(gnames, torch.zeros(3))
