"""Does a mask temperature change what the organism learns? (why the demo searches β)

RigL for 12 surgeries on permuted digits at 10% density under Gumbel-softmax masks at
τ ∈ {0.3, 1, 3} and Hard Concrete gates at β ∈ {0.3, 0.66, 1.5}, with the hard mask
(``masked``) for reference; prints and writes each one's online accuracy. Gumbel-softmax's τ
only shapes its gates' gradients (its forward pass is hard), Hard Concrete's β sets how far its
training gates spread.

Usage: ``.venv/bin/python benchmarks/mask_temperature_effect.py --json PATH`` (under a minute).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esper.bench.harness import machine_info
from esper.conf import compose
from esper.files import atomic_write_text
from esper.policies.base import make_policy
from esper.policies.evaluation import evaluate_policy
from esper.threads import one_thread
from esper.workloads.factory import build_organism

BASE = ("policy=rigl", "policy.density=0.1", "policy.surgery_interval=25")
SURGERIES = 12
CASES = {
    "gumbel_softmax tau=0.3": ("gumbel_softmax", "tau", 0.3),
    "gumbel_softmax tau=1": ("gumbel_softmax", "tau", 1.0),
    "gumbel_softmax tau=3": ("gumbel_softmax", "tau", 3.0),
    "hard_concrete beta=0.3": ("hard_concrete", "beta", 0.3),
    "hard_concrete beta=0.66": ("hard_concrete", "beta", 0.66),
    "hard_concrete beta=1.5": ("hard_concrete", "beta", 1.5),
    "masked": ("masked", None, None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    accuracy = {}
    for name, (mechanism, key, value) in CASES.items():
        extra = [f"workload.scalpel.mechanism.params.{key}={value}"] if key else []
        cfg = compose([*BASE, f"workload.scalpel.mechanism.name={mechanism}", *extra])
        policy = make_policy(cfg.policy.name, **cfg.policy.params)
        with one_thread():
            report = evaluate_policy(build_organism(cfg), policy, SURGERIES)
        accuracy[name] = report.online_accuracy
        print(f"{name:26s} {report.online_accuracy:.4f}")
    payload = {"machine": machine_info(), "base": BASE, "surgeries": SURGERIES,
               "online_accuracy": accuracy}  # fmt: skip
    atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n")


if __name__ == "__main__":
    main()
