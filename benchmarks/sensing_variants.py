"""Do the cheaper readings change what Emrakul does? The quality benchmark's Emrakul checkpoint
(trained with full readings) evaluated with full, fused (``sensors.fused=true``) and every-4th
Hutchinson (``sensors.hutchinson_every=4``) readings on four streams of the small quality suite,
10 evaluation seeds each, at density 0.1: online accuracy, paired differences against full
readings with 95% BCa intervals over the (stream, seed) units, and wall time.

Usage: ``.venv/bin/python benchmarks/sensing_variants.py --json PATH`` (about 8 minutes on
2 cores; every run a Ray task).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from esper.analysis.intervals import paired_interval
from esper.bench.harness import machine_info
from esper.bench.quality import evaluate_run
from esper.bench.quality_suite import SMALL_STREAMS
from esper.bench.tasks import ray_map
from esper.files import atomic_write_text

CHECKPOINT = "benchmarks/results/quality-emrakul.pt"
STREAMS = ("permuted50", "class_incremental", "label_permuted", "recurring")
SEEDS = tuple(range(1000, 1010))
VARIANTS = {
    "full": (),
    "fused": ("workload.organism.sensors.fused=true",),
    "hutchinson_every_4": ("workload.organism.sensors.hutchinson_every=4",),
}


def one_run(stream: str, seed: int, variant: str, checkpoint: str) -> dict[str, Any]:
    base = {s.name: s for s in SMALL_STREAMS}[stream]
    changed = dataclasses.replace(base, overrides=(*base.overrides, *VARIANTS[variant]))
    start = time.perf_counter()
    result = evaluate_run(changed, "emrakul", 0.1, seed, checkpoint=checkpoint)
    return {"stream": stream, "seed": seed, "variant": variant,
            "online": result["metrics"]["online_accuracy"],
            "seconds": time.perf_counter() - start}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args(argv)
    console = Console()
    checkpoint = str(Path(CHECKPOINT).resolve(strict=True))
    jobs = [(s, seed, v, checkpoint) for s in STREAMS for seed in SEEDS for v in VARIANTS]
    rows = ray_map(one_run, jobs, "emrakul runs", None, args.num_cpus, console)
    table = {(r["stream"], r["seed"], r["variant"]): r for r in rows}
    units = [(s, seed) for s in STREAMS for seed in SEEDS]
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        if variant == "full":
            continue
        for scope in ("all", *STREAMS):
            chosen = [u for u in units if scope in ("all", u[0])]
            ours = [table[(*u, variant)]["online"] for u in chosen]
            full = [table[(*u, "full")]["online"] for u in chosen]
            cell = paired_interval(ours, full)
            summary[f"{variant} - full, {scope}"] = {
                "mean": cell.mean, "ci": [cell.low, cell.high], "n": cell.n,
            }  # fmt: skip
            console.print(
                f"{variant} − full, {scope}: {cell.mean:+.4f} [{cell.low:+.4f}, {cell.high:+.4f}]"
            )
    seconds = {v: sum(r["seconds"] for r in rows if r["variant"] == v) for v in VARIANTS}
    payload = {"machine": machine_info(), "checkpoint": CHECKPOINT, "density": 0.1,
               "differences": summary, "seconds": seconds, "runs": rows}  # fmt: skip
    atomic_write_text(args.json, json.dumps(payload, indent=1) + "\n")
    console.print(f"seconds per variant (runs in parallel): {seconds}; written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
