"""Does a surgery's reward follow its own effect, before and after the control twin? (issue 24)

For every surgery of an exploring Emrakul (the shipped checkpoint) on the quality suite's six
streams, at density 0.10, on training seeds, the organism with the surgery, the same organism
without it (same next batches) and its RigL control twin train the same ``K`` steps; the
surgery's effect is with-minus-without online accuracy. Reports the correlation of the reward's
accuracy term (and of the whole reward) with that effect, raw and measured against the twin
(:mod:`esper.bench.credit`, :mod:`esper.policies.credit`).

Usage: ``.venv/bin/python benchmarks/credit.py --json benchmarks/results/credit.json
[--surgeries 50] [--seed 0]``. About 3 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from esper.bench.credit import CreditSetup, credit_summary, format_summary, measure_stream
from esper.bench.harness import machine_info
from esper.bench.tasks import ray_map
from esper.files import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--surgeries", type=int, default=50, help="per stream (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="training seed base (default 0)")
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--checkpoint", default=CreditSetup.checkpoint)
    parser.add_argument("--address", default=None, help="a Ray cluster to run on")
    args = parser.parse_args()
    console = Console()
    setup = CreditSetup(surgeries=args.surgeries, density=args.density, seed=args.seed,
                        checkpoint=args.checkpoint)  # fmt: skip
    started = time.perf_counter()
    jobs = [
        (s, setup.density, setup.seed + 1 + i, setup.checkpoint, setup.surgeries, setup.control)
        for i, s in enumerate(setup.streams)
    ]
    per_stream = ray_map(measure_stream, jobs, "credit", args.address, None, console)
    rows = [row for part in per_stream for row in part]
    summary = credit_summary(rows)
    result = {
        "machine": machine_info(),
        "command": "python benchmarks/credit.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if v is not None),
        "setup": {
            "streams": [s.name for s in setup.streams],
            "surgeries": setup.surgeries,
            "density": setup.density,
            "seed": setup.seed,
            "checkpoint": setup.checkpoint,
            "control": setup.control,
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "summary": summary,
        "rows": rows,
    }
    atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    console.print(format_summary(summary))
    console.print(f"written to {args.json} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
