"""Does Emrakul learn to avoid the double loss when it can protect and steer the buffer?

Two Emrakul variants are trained alike on the double-loss stream (``digits_long_tail``: three
rare classes at 2 %, a small reservoir buffer, weights at density 0.1, no synchronized
retention): ``plain`` (today's actions) and ``data`` (with the Specialists' protect bit and the
General's data action), the latter also without the RigL-imitation warm start (RigL never
protects, so imitating it teaches not to). Training: MAPPO (lr 1e-4), on six organisms of
training seeds 100-105. Each is then evaluated greedily on the double-loss bench's
small-preset seeds (0-4), beside RigL with independent and with synchronized retention, by
:func:`esper.bench.double_loss.run_arm`: tail, common and online accuracy, double-loss cases, and
how often the ``data`` variant asked for protection. Exploratory: one training run per variant.

Usage: ``.venv/bin/python benchmarks/emrakul_double_loss.py --json PATH [--surgeries N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from esper.analysis.intervals import bootstrap_interval, paired_interval
from esper.bench.double_loss import PRESETS, arm_overrides, run_arm
from esper.bench.harness import machine_info
from esper.bench.tasks import ray_map
from esper.files import atomic_write_text

_DATA = ("+policy.params.protect=true", "+policy.params.data_action=true")
VARIANTS: dict[str, tuple[tuple[str, ...], int]] = {
    "plain": ((), 24),
    "data": (_DATA, 24),
    "data, RL only": (_DATA, 0),  # no RigL imitation: RigL never protects
}
"""Label → (policy overrides, RigL-imitation surgeries per training organism)."""
ARM = "both, independent"  # the weight and data budgets of the arm Emrakul replaces RigL in
TRAIN_SEEDS = tuple(range(100, 106))
MEASURES = ("tail", "common", "online", "double_loss_cases", "protect_rate", "protect_probability")


def train(variant: str, surgeries: int, out: str) -> str:
    from esper.conf import compose
    from esper.policies.checkpoints import save_policy
    from esper.policies.training import train_policy
    from esper.threads import one_thread

    preset = PRESETS["small"]

    def cfg(seed: int) -> Any:
        base = [o for o in arm_overrides(preset, ARM, seed) if not o.startswith("policy=")]
        return compose(["policy=emrakul", *base, *VARIANTS[variant][0]])

    first = cfg(TRAIN_SEEDS[0])
    training = dataclasses.replace(first.policy.training, surgeries=surgeries, rollout=16,
                                   imitation=VARIANTS[variant][1],
                                   learner_params={"lr": 1e-4})  # fmt: skip
    first = dataclasses.replace(first, policy=dataclasses.replace(first.policy, training=training))
    with one_thread():
        result = train_policy(first, [cfg(s) for s in TRAIN_SEEDS])
    return str(save_policy(Path(out) / f"emrakul-{variant}.pt", result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--surgeries", type=int, default=1200)
    args = parser.parse_args(argv)
    console, start = Console(), time.perf_counter()
    preset = PRESETS["small"]
    with tempfile.TemporaryDirectory() as out:
        paths = ray_map(train, [(v, args.surgeries, out) for v in VARIANTS], "training",
                        None, None, console)  # fmt: skip
        checkpoints = dict(zip(VARIANTS, paths, strict=True))
        jobs = [(preset, ARM, seed, checkpoints[v]) for v in VARIANTS for seed in preset.seeds]
        jobs += [(preset, arm, seed) for arm in (ARM, "both, synchronized")
                 for seed in preset.seeds]  # fmt: skip
        runs = ray_map(run_arm, jobs, "evaluation", None, None, console)
    labels = [f"emrakul {v}" for v in VARIANTS for _ in preset.seeds]
    labels += [f"rigl, {a.split(', ')[1]}" for a in (ARM, "both, synchronized")
               for _ in preset.seeds]  # fmt: skip
    by: dict[str, list[dict[str, Any]]] = {}
    for label, run in zip(labels, runs, strict=True):
        by.setdefault(label, []).append(run)
    summary: dict[str, Any] = {
        label: {m: bootstrap_interval([r[m] for r in rows]).to_json() for m in MEASURES}
        for label, rows in by.items()
    }
    for a, b in (
        ("emrakul data", "emrakul plain"),
        ("emrakul data", "rigl, independent"),
        ("emrakul plain", "rigl, independent"),
        ("emrakul data", "rigl, synchronized"),
    ):
        summary[f"{a} minus {b}"] = {
            m: paired_interval([r[m] for r in by[a]], [r[m] for r in by[b]]).to_json()
            for m in ("tail", "common", "online")
        }  # fmt: skip
    for label, cells in summary.items():
        line = ", ".join(f"{m} {c['mean']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
                         if c.get("ci") and c["ci"][0] is not None else f"{m} {c['mean']:.3f}"
                         for m, c in cells.items())  # fmt: skip
        console.print(f"{label}: {line}")
    for label in ("emrakul data", "emrakul data, RL only"):
        for run in by[label]:
            console.print(f"{label}, seed {run['seed']}: data actions {run['data_actions']}")
    payload = {"machine": machine_info(), "preset": dataclasses.asdict(preset),
               "surgeries": args.surgeries, "train_seeds": list(TRAIN_SEEDS),
               "seconds": time.perf_counter() - start, "summary": summary,
               "runs": {k: v for k, v in by.items()}}  # fmt: skip
    atomic_write_text(args.json, json.dumps(payload, indent=1, default=float) + "\n")
    console.print(f"written to {args.json} in {np.round(payload['seconds'] / 60, 1)} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
