"""Does a live heat burst help? Paired runs of one sampling Emrakul with and without its heat
acting on the mask mechanism's temperature.

Under a temperature mechanism Emrakul's heat burst multiplies the layer's configured temperature
by ``heat_tau`` (``policy.params.mechanism_heat``, on by default since issue 25). The
observational effect in ``esper bench strategies --preset heated`` compares accuracy after a
burst with matched quiet windows of the same run, and short runs leave few such windows. This
script measures it causally instead: the same checkpoint, sampling its actions as in training
(so it heats), on Hard Concrete masks, with ``mechanism_heat`` on and off, paired by stream,
density and seed (the policy's random stream is the same, so the runs part only where the heat
acts), with the greedy policy and RigL on the same masks as references. Validation seeds 500
and 501 only (the default it informs is chosen here).

Usage: ``.venv/bin/python benchmarks/live_heat.py CHECKPOINT OUT.json`` (about 4 minutes on 2
cores; ``--workers N``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from esper.bench.harness import machine_info, paired_against, pooled
from esper.bench.quality_evaluation import evaluate_run
from esper.bench.quality_suite import SMALL_STREAMS, Stream
from esper.files import atomic_write_text, output_problem

SEEDS = (500, 501)
DENSITIES = (0.1, 0.05)
MECHANISM = ("workload.scalpel.mechanism.name=hard_concrete",)


def conditions(checkpoint: str) -> dict[str, dict[str, Any]]:
    """Every condition's :func:`evaluate_run` arguments (stream, density and seed aside)."""
    emrakul = {"policy": "emrakul", "checkpoint": checkpoint, "overrides": MECHANISM}
    return {
        "heat_live": {**emrakul, "switches": (("greedy", False), ("mechanism_heat", True))},
        "heat_off": {**emrakul, "switches": (("greedy", False), ("mechanism_heat", False))},
        "greedy": emrakul,
        "rigl": {"policy": "rigl", "overrides": MECHANISM},
    }


def _run(job: tuple[str, Stream, float, int, dict[str, Any]]) -> tuple[str, str, float, int, float]:
    label, stream, density, seed, kwargs = job
    metrics = evaluate_run(stream, density=density, seed=seed, **kwargs)["metrics"]
    return label, stream.name, density, seed, float(metrics["online_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("checkpoint", help="an Emrakul checkpoint that heats when it samples")
    parser.add_argument("out", type=Path, help="where the JSON goes")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if (problem := output_problem(args.out)) is not None:
        raise SystemExit(f"{args.out}: {problem}")
    if not Path(args.checkpoint).is_file():
        raise SystemExit(f"{args.checkpoint}: no such checkpoint file")
    table = conditions(args.checkpoint)
    jobs = [(label, s, d, seed, kw) for label, kw in table.items() for s in SMALL_STREAMS
            for d in DENSITIES for seed in SEEDS]  # fmt: skip
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    started = time.perf_counter()
    scores: dict[str, dict[tuple[str, float, int], float]] = {k: {} for k in table}
    for label, name, d, seed, acc in pooled(_run, jobs, args.workers):
        scores[label][(name, d, seed)] = acc
    rows = {
        label: {"mean": row["mean"], "minus_heat_off": row["diff"]}
        for label, row in paired_against(scores, "heat_off").items()
    }
    report = {
        "machine": {**machine_info(), "commit": commit.strip()},
        "what": "a sampling Emrakul on Hard Concrete masks with its heat bursts acting on the "
        "mechanism's temperature (heat_live) or not (heat_off), paired; validation seeds",
        "checkpoint": {
            "path": args.checkpoint,
            "sha256": hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest(),
        },
        "seeds": list(SEEDS),
        "densities": list(DENSITIES),
        "streams": [s.name for s in SMALL_STREAMS],
        "wall_s": time.perf_counter() - started,
        "conditions": rows,
        "runs": [
            {"condition": k, "stream": n, "density": d, "seed": s, "online_accuracy": a}
            for k, by in scores.items()
            for (n, d, s), a in sorted(by.items())
        ],
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
