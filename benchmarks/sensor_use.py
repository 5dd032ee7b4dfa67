"""Does a trained Emrakul read its sensors, or act the same whatever they say? (issue 24)

For each checkpoint, on each of the quality suite's streams (training seeds, density 0.10), an
organism is trained without surgery for ``--steps`` surgery intervals and, at every interval,
the greedy policy's actor outputs are read on that step:

* **state dependence**: over the intervals, the standard deviation of the Specialists' action
  means (per layer and action dimension, averaged), and of the General's density logits. Zero
  means the actor gives the same decision whatever it observes.
* **the bits** (heat burst, forget): the mean probability of each over layers and intervals,
  and its standard deviation over the intervals (zero: the same odds whatever it observes).
  The greedy policy takes a bit only where its probability exceeds 1/2, so a bit kept rare
  never fires in an evaluation.
* **sensor sensitivity** (:func:`esper.policies.emrakul.sensitivity.sensor_sensitivity`): how far
  those outputs move when the gradient or the topology sensor group is zeroed.

Both are measured on the same steps for every checkpoint, so the imitation snapshot (surgeries
0) and the RL checkpoints of one training run compare directly.

Usage: ``.venv/bin/python benchmarks/sensor_use.py --json PATH CHECKPOINT [CHECKPOINT ...]``
(about a minute per checkpoint on one core).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esper.bench.harness import machine_info
from esper.bench.quality_evaluation import compose_config, policy_overrides
from esper.bench.quality_suite import SMALL_STREAMS
from esper.files import atomic_write_text
from esper.policies.checkpoints import load_policy
from esper.policies.emrakul.ablation import SENSOR_GROUPS
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.emrakul.sensitivity import sensor_sensitivity
from esper.threads import one_thread
from esper.workloads.factory import build_organism

_BITS = ((0, "heat"), (1, "forget"))
"""The Specialists' Bernoulli bits read here, by column of the distribution's logits."""


def measure(checkpoint: str, steps: int, seed: int) -> dict[str, Any]:
    """State dependence and sensor sensitivity of ``checkpoint``, per stream and overall."""
    policy = load_policy(checkpoint)
    assert isinstance(policy, EmrakulPolicy)
    per_stream: dict[str, Any] = {}
    for i, stream in enumerate(SMALL_STREAMS):
        cfg = compose_config(
            [*policy_overrides(stream, "emrakul", 0.1), f"experiment.seed={seed + i}"]
        )
        organism = build_organism(cfg)
        step = organism.reset()
        policy.reset(organism, step)
        assert policy.specialist is not None and policy.general is not None
        means, logits, bits = [], [], []
        sensitivity: dict[str, list[tuple[float, float]]] = {g: [] for g in SENSOR_GROUPS}
        for _ in range(steps):
            obs, ids, state = policy.inputs(organism, step)
            with torch.no_grad():
                dist = policy.specialist.distribution(obs, ids)
                means.append(dist.mean)
                assert dist.logits is not None
                bits.append(torch.sigmoid(dist.logits[:, :2]))
                logits.append(policy.general.distribution(state.unsqueeze(0)).mean[0])
            for group in SENSOR_GROUPS:
                s = sensor_sensitivity(policy, organism, step, group)
                sensitivity[group].append((s.specialist, s.general))
            step = organism.step({})
        per_stream[stream.name] = {
            "specialist_state_sd": float(torch.stack(means).std(dim=0).mean()),
            "general_state_sd": float(torch.stack(logits).std(dim=0).mean()),
            "specialist_mean_abs": float(torch.stack(means).abs().mean()),
            **{f"{bit}_p": float(torch.stack(bits)[..., j].mean()) for j, bit in _BITS},
            **{f"{bit}_p_state_sd": float(torch.stack(bits)[..., j].std(dim=0).mean())
               for j, bit in _BITS},
            **{f"{g}_sensitivity": {"specialist": float(np.mean([a for a, _ in v])),
                                    "general": float(np.mean([b for _, b in v]))}
               for g, v in sensitivity.items()},
        }  # fmt: skip
    keys = [
        "specialist_state_sd",
        "general_state_sd",
        "specialist_mean_abs",
        *(f"{bit}_p{sd}" for _, bit in _BITS for sd in ("", "_state_sd")),
    ]
    overall: dict[str, Any] = {k: float(np.mean([p[k] for p in per_stream.values()])) for k in keys}
    for g in SENSOR_GROUPS:
        overall[f"{g}_sensitivity"] = {
            side: float(np.mean([p[f"{g}_sensitivity"][side] for p in per_stream.values()]))
            for side in ("specialist", "general")
        }
    return {"checkpoint": checkpoint, "overall": overall, "per_stream": per_stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=12, help="intervals per stream")
    parser.add_argument("--seed", type=int, default=400, help="training-side seed base")
    args = parser.parse_args()
    with one_thread():
        results = [measure(c, args.steps, args.seed) for c in args.checkpoints]
    for r in results:
        o = r["overall"]
        print(f"{r['checkpoint']}: specialist state sd {o['specialist_state_sd']:.5f}, general "
              f"{o['general_state_sd']:.5f}; gradient {o['gradient_sensitivity']}, topology "
              f"{o['topology_sensitivity']}; heat p {o['heat_p']:.3f} (sd "
              f"{o['heat_p_state_sd']:.4f}), forget p {o['forget_p']:.3f}")  # fmt: skip
    out = {"machine": machine_info(), "steps": args.steps, "seed": args.seed, "results": results}
    atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
