"""Does Emrakul learn to avoid the double loss when it can protect and steer the buffer?

Two Emrakul variants are trained alike on the double-loss stream (``digits_long_tail``: three
rare classes at 2 %, a small reservoir buffer, weights at density 0.1, no synchronized
retention): ``plain`` (today's actions) and ``data`` (with the Specialists' protect bit and the
General's data action), the latter also without the RigL-imitation warm start (RigL never
protects, so imitating it teaches not to). Training: MAPPO (lr 1e-4), on six organisms of
training seeds 100-105. Each is then evaluated greedily on the double-loss bench's
small-preset seeds (0-4), beside RigL with independent and with synchronized retention, by
:func:`esper.bench.double_loss.run_arm`: tail, common and online accuracy, double-loss cases, and
how often the ``data`` variant asked for protection. Exploratory: one training run per variant,
unless ``--repeats R`` trains each chosen variant R times on disjoint training seeds (run r:
seeds 100-105 shifted by 6 r); the summary then also gives, per variant, each training run's
mean difference from RigL and an interval over the runs (how much of a difference is the
training run rather than the evaluation seeds).

Usage: ``.venv/bin/python benchmarks/emrakul_double_loss.py --json PATH [--surgeries N]
[--repeats R] [--variants "plain;data"]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
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
_WITHHELD = "data action withheld"
ARM = "both, independent"  # the weight and data budgets of the arm Emrakul replaces RigL in
TRAIN_SEEDS = tuple(range(100, 106))
MEASURES = ("tail", "common", "online", "double_loss_cases", "protect_rate", "protect_probability")


def train(variant: str, surgeries: int, out: str, repeat: int = 0) -> str:
    """Train ``variant`` on the training seeds of ``repeat`` (repeat r: :data:`TRAIN_SEEDS`
    shifted by ``6 r``, so that repeats share no organism)."""
    seeds = [s + len(TRAIN_SEEDS) * repeat for s in TRAIN_SEEDS]
    from esper.conf import compose
    from esper.policies.checkpoints import save_policy
    from esper.policies.training import train_policy
    from esper.threads import one_thread

    preset = PRESETS["small"]

    def cfg(seed: int) -> Any:
        base = [o for o in arm_overrides(preset, ARM, seed) if not o.startswith("policy=")]
        return compose(["policy=emrakul", *base, *VARIANTS[variant][0]])

    first = cfg(seeds[0])
    training = dataclasses.replace(first.policy.training, surgeries=surgeries, rollout=16,
                                   imitation=VARIANTS[variant][1],
                                   learner_params={"lr": 1e-4})  # fmt: skip
    first = dataclasses.replace(first, policy=dataclasses.replace(first.policy, training=training))
    with one_thread():
        result = train_policy(first, [cfg(s) for s in seeds])
    return str(save_policy(Path(out) / f"emrakul-{variant}-{repeat}.pt", result))


Comparison = tuple[str, Callable[[int], str], Callable[[int], str]]
"""A title, and the labels of the two sides of training run ``k``."""


def _between_runs(by: dict[str, list[dict[str, Any]]], comparisons: list[Comparison],
                  repeats: int, console: Console) -> dict[str, Any]:  # fmt: skip
    """Per comparison, each training run's mean paired difference (over the evaluation seeds)
    and an interval over the runs: how much of a difference is the training run."""
    out: dict[str, Any] = {}
    for title, a, b in comparisons:
        label = f"{title}, between training runs"
        per_run = {
            m: [paired_interval([r[m] for r in by[a(k)]], [r[m] for r in by[b(k)]]).mean
                for k in range(repeats)]
            for m in ("tail", "common", "online")
        }  # fmt: skip
        out[label] = {m: {"runs": v, **bootstrap_interval(v).to_json()}
                      for m, v in per_run.items()}  # fmt: skip
        runs = (f"{m} runs {' '.join(f'{x:+.3f}' for x in v)}" for m, v in per_run.items())
        console.print(f"{label}: " + ", ".join(runs))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--surgeries", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=1,
                        help="training runs per variant, on disjoint training seeds")  # fmt: skip
    parser.add_argument("--variants", default=";".join(VARIANTS),
                        help=f"';'-separated, of: {'; '.join(VARIANTS)}")  # fmt: skip
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(";") if v.strip()]
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; valid: {'; '.join(VARIANTS)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be ≥ 1, got {args.repeats}")
    console, start = Console(), time.perf_counter()
    preset = PRESETS["small"]
    runs_of = [(v, k) for v in variants for k in range(args.repeats)]

    def name(variant: str, repeat: int) -> str:
        return f"emrakul {variant}" + ("" if args.repeats == 1 else f" #{repeat}")

    with tempfile.TemporaryDirectory() as out:
        paths = ray_map(train, [(v, args.surgeries, out, k) for v, k in runs_of], "training",
                        None, None, console)  # fmt: skip
        # a data variant's checkpoints also without their data action: weight surgery alone
        withheld = [(v, k, p) for (v, k), p in zip(runs_of, paths, strict=True) if _DATA[1] in
                    VARIANTS[v][0]]  # fmt: skip
        jobs: list[tuple[Any, ...]] = [(preset, ARM, s, path) for path in paths
                                       for s in preset.seeds]  # fmt: skip
        jobs += [(preset, ARM, s, p, False) for _, _, p in withheld for s in preset.seeds]
        jobs += [(preset, arm, s) for arm in (ARM, "both, synchronized") for s in preset.seeds]
        runs = ray_map(run_arm, jobs, "evaluation", None, None, console)
    labels = [name(v, k) for v, k in runs_of for _ in preset.seeds]
    labels += [f"{name(v, k)}, {_WITHHELD}" for v, k, _ in withheld for _ in preset.seeds]
    labels += [f"rigl, {a.split(', ')[1]}" for a in (ARM, "both, synchronized")
               for _ in preset.seeds]  # fmt: skip
    by: dict[str, list[dict[str, Any]]] = {}
    for label, run in zip(labels, runs, strict=True):
        by.setdefault(label, []).append(run)
    summary: dict[str, Any] = {
        label: {m: bootstrap_interval([r[m] for r in rows]).to_json() for m in MEASURES}
        for label, rows in by.items()
    }
    pairs = [(f"emrakul {v}", rigl) for v in variants
             for rigl in ("rigl, independent", "rigl, synchronized")]  # fmt: skip
    if {"plain", "data"} <= set(variants):
        pairs[:0] = [("emrakul data", "emrakul plain"),
                     (f"emrakul data, {_WITHHELD}", "emrakul plain"),
                     ("emrakul data", f"emrakul data, {_WITHHELD}")]  # fmt: skip
    for a, b in pairs if args.repeats == 1 else ():
        summary[f"{a} minus {b}"] = {
            m: paired_interval([r[m] for r in by[a]], [r[m] for r in by[b]]).to_json()
            for m in ("tail", "common", "online")
        }  # fmt: skip
    for label, cells in summary.items():
        line = ", ".join(f"{m} {c['mean']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
                         if c.get("ci") and c["ci"][0] is not None else f"{m} {c['mean']:.3f}"
                         for m, c in cells.items())  # fmt: skip
        console.print(f"{label}: {line}")
    if args.repeats > 1:

        def run_of(variant: str, suffix: str = "") -> Callable[[int], str]:
            return lambda k: name(variant, k) + suffix

        def fixed(label: str) -> Callable[[int], str]:
            return lambda _: label

        comparisons: list[Comparison] = [
            (f"emrakul {v} minus {rigl}", run_of(v), fixed(rigl))
            for v in variants for rigl in ("rigl, independent", "rigl, synchronized")
        ]  # fmt: skip
        if {"plain", "data"} <= set(variants):
            comparisons += [
                ("emrakul data minus emrakul plain", run_of("data"), run_of("plain")),
                (f"emrakul data, {_WITHHELD} minus emrakul plain",
                 run_of("data", f", {_WITHHELD}"), run_of("plain")),
            ]  # fmt: skip
        summary.update(_between_runs(by, comparisons, args.repeats, console))
    for label, rows in by.items():
        if label.startswith("emrakul data"):
            for run in rows:
                console.print(f"{label}, seed {run['seed']}: data actions {run['data_actions']}")
    payload = {"machine": machine_info(), "preset": dataclasses.asdict(preset),
               "surgeries": args.surgeries, "train_seeds": list(TRAIN_SEEDS),
               "repeats": args.repeats, "seconds": time.perf_counter() - start,
               "summary": summary, "runs": {k: v for k, v in by.items()}}  # fmt: skip
    atomic_write_text(args.json, json.dumps(payload, indent=1, default=float) + "\n")
    console.print(f"written to {args.json} in {np.round(payload['seconds'] / 60, 1)} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
