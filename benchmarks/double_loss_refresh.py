"""How much does refreshing a little less of the buffer at each surgery protect the tail?

``benchmarks/emrakul_double_loss.py`` found Emrakul's ``data`` variant ahead of ``plain`` on the
rare classes in every training run, although it never protects. What it does do is set the
buffer's refresh share: about 0.95 where every other run replaces its candidates at the
memory's default of 1.0. This runs RigL (independent and synchronized retention, the double-
loss bench's small preset, seeds 0-4) at several refresh shares
(``workload.memory.refresh``), with nothing else changed, and reports each share's tail,
common and online accuracy and its paired difference from the default 1.0.

Usage: ``.venv/bin/python benchmarks/double_loss_refresh.py --json PATH [--shares 1,0.95,0.9]``.
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

from esper.analysis.intervals import bootstrap_interval, paired_interval
from esper.bench.double_loss import PRESETS, run_arm
from esper.bench.harness import machine_info
from esper.bench.tasks import ray_map
from esper.files import atomic_write_text

ARMS = ("both, independent", "both, synchronized")
MEASURES = ("tail", "common", "online")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--shares", default="1,0.95,0.9", help="refresh shares, comma-separated")
    args = parser.parse_args(argv)
    try:
        shares = [float(s) for s in args.shares.split(",")]
    except ValueError:
        parser.error(f"--shares must be numbers in [0, 1], got {args.shares!r}")
    if not all(0.0 <= s <= 1.0 for s in shares) or 1.0 not in shares:
        parser.error(f"--shares must lie in [0, 1] and include 1 (the default), got {shares}")
    console, start = Console(), time.perf_counter()
    base = PRESETS["small"]
    cells = [(arm, share) for arm in ARMS for share in shares]
    jobs = [
        (dataclasses.replace(base, overrides=(*base.overrides, f"workload.memory.refresh={share}")),
         arm, seed)
        for arm, share in cells
        for seed in base.seeds
    ]  # fmt: skip
    runs = ray_map(run_arm, jobs, "runs", None, None, console)
    n = len(base.seeds)
    by = {f"rigl, {arm.split(', ')[1]}, refresh {share:g}": runs[i * n : (i + 1) * n]
          for i, (arm, share) in enumerate(cells)}  # fmt: skip
    summary: dict[str, Any] = {
        label: {m: bootstrap_interval([r[m] for r in rows]).to_json() for m in MEASURES}
        for label, rows in by.items()
    }
    for arm, share in cells:
        if share == 1.0:
            continue
        kind = arm.split(", ")[1]
        a, b = by[f"rigl, {kind}, refresh {share:g}"], by[f"rigl, {kind}, refresh 1"]
        summary[f"rigl, {kind}: refresh {share:g} minus 1"] = {
            m: paired_interval([r[m] for r in a], [r[m] for r in b]).to_json() for m in MEASURES
        }
    for label, row in summary.items():
        line = ", ".join(
            f"{m} {c['mean']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
            if c.get("ci") and c["ci"][0] is not None
            else f"{m} {c['mean']:.3f}"
            for m, c in row.items()
        )
        console.print(f"{label}: {line}")
    seconds = time.perf_counter() - start
    payload = {"machine": machine_info(), "preset": dataclasses.asdict(base), "shares": shares,
               "seconds": seconds, "summary": summary, "runs": by}  # fmt: skip
    atomic_write_text(args.json, json.dumps(payload, indent=1, default=float) + "\n")
    console.print(f"written to {args.json} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
