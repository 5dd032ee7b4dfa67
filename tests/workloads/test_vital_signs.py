"""The organism's vital signs: what the General is paid for, visible in its global state."""

from __future__ import annotations

import math

import pytest
import torch

from esper.conf import compose
from esper.workloads.factory import build_organism
from esper.workloads.prequential import OnlineWindow
from esper.workloads.sensors.state import Observation
from esper.workloads.vital_signs import vital_signs


def _obs(*topo: float) -> Observation:
    names = ("density", *(f"topo_{i}" for i in range(len(topo))))
    return Observation(names, torch.tensor([0.5, *topo]), "w")


def test_vital_signs_by_hand() -> None:
    window = OnlineWindow(
        accuracy=[0.5] * 8, loss=[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0], novelty=[0.0] * 8
    )
    signs = vital_signs(window, 2, 0.25, {"a": _obs(1.0, -1.0), "b": _obs(0.0, 0.0)})
    assert signs["online_accuracy"] == 0.5
    assert signs["log_online_loss"] == pytest.approx(math.log10(1.375))
    assert signs["online_loss_trend"] == 0.0  # the window ends where it started
    assert signs["surprise"] == pytest.approx(1.0)  # a 2-step loss mean twice the start's
    assert signs["flops_ratio"] == 0.25
    assert (signs["topo_mean_0"], signs["topo_mean_1"]) == (0.5, -0.5)
    calm = OnlineWindow(accuracy=[0.9] * 6, loss=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5], novelty=[0.0] * 6)
    signs = vital_signs(calm, 2, 0.1, {})
    assert signs["surprise"] == 0.0 and signs["online_loss_trend"] == pytest.approx(-0.4 / 0.95)


def test_the_global_state_carries_them_and_a_restore_rebuilds_them() -> None:
    cfg = compose(["policy.density=0.2", "policy.surgery_interval=6",
                   "workload.host.params.hidden=[32,16]"])  # fmt: skip
    organism = build_organism(cfg)
    organism.reset()
    step = organism.step({})
    state = step.global_state
    assert state["online_accuracy"] == pytest.approx(step.info["online_accuracy"])
    assert state["flops_ratio"] == pytest.approx(organism.scalpel.flops((64,)).ratio)
    assert {"surprise", "online_loss_trend", "topo_mean_0"} <= set(state.names)
    twin = build_organism(cfg)
    twin.load_state_dict(organism.state_dict())
    assert torch.equal(twin.current().global_state.to_tensor(), state.to_tensor())
