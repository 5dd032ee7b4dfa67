"""A pinned trajectory: changes made for speed must not change what the organism computes.

Recorded before the lean-step work (issue 10) on a fixed seed: four RigL surgeries of 20 steps
at 10% density. Online accuracies and the events' identities must match exactly; losses to
float tolerance only (another CPU's vector units may round the last bit differently).
"""

from __future__ import annotations

import math

import torch

from esper.conf import compose
from esper.policies.base import make_policy
from esper.workloads.factory import build_organism

_ACCURACY = [0.1328125, 0.1875, 0.128125, 0.096875]
_LOSS = [2.289185678958893, 2.2774801373481752, 2.2957559466362, 2.301122772693634]
_COUNTS = [254, 254, 338, 338, 182, 182] * 4


def test_online_accuracy_loss_and_events_match_the_recorded_trajectory() -> None:
    overrides = ["policy.surgery_interval=20", "policy.density=0.1"]
    cfg = compose([*overrides, "workload.schedule.params.task_length=30"])
    with torch.random.fork_rng(devices=[]):
        organism = build_organism(cfg, 3)
        step = organism.reset()
        policy = make_policy("rigl", delta_t=1)
        policy.reset(organism, step)
        accuracy, loss, events = [], [], []
        for _ in range(4):
            step = organism.step(policy.act(organism, step))
            accuracy.append(step.info["online_accuracy"])
            loss.append(step.info["online_loss"])
            events += [(e.action, e.count) for e in step.events]
    assert accuracy == _ACCURACY
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(loss, _LOSS, strict=True))
    assert [c for _, c in events] == _COUNTS
    assert [a for a, _ in events] == ["prune", "regrow"] * 12
