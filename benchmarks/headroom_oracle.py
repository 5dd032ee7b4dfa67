"""What would knowing the stream be worth? A cross-validated oracle over the headroom table.

``benchmarks/headroom.py`` scores fixed simple policies on the validation seeds (500, 501).
A policy whose decisions depend on what its sensors read can at best tell the streams apart
and play each one's best fixed policy. This script measures that ceiling from the recorded
runs (``benchmarks/results/headroom.json``; nothing is run): for every stream and density it
picks the condition that scores best on all seeds but one and scores that pick on the one left
out, each seed in turn (with two seeds, two-fold cross-validation; the pick is never scored on
a seed that chose it), and compares with the same procedure restricted to one pick for all
streams (a state-independent policy). The difference between the two is the part of the
headroom that sensing could add.

Usage: ``.venv/bin/python benchmarks/headroom_oracle.py benchmarks/results/headroom.json OUT.json``
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esper.analysis.intervals import paired_interval
from esper.bench.harness import machine_info

REFERENCE = "imitation_erk"

Unit = tuple[str, float]  # (stream, density)


def cross_validated(
    acc: dict[tuple[str, str, float, int], float],
    conditions: list[str],
    units: list[Unit],
    seeds: Sequence[int],
    per_unit: bool,
) -> tuple[list[float], list[float], list[dict[str, Any]]]:
    """Leave one seed out: each seed in turn is scored with the picks made on the others.
    Returns the picks' scores on their held-out seed, the reference's on the same runs, and the
    picks made (per unit, or one for all units when not ``per_unit``)."""

    def mean(condition: str, group: list[Unit], chosen_on: list[int]) -> float:
        runs = [acc[(condition, s, d, seed)] for s, d in group for seed in chosen_on]
        return sum(runs) / len(runs)

    picked, reference, picks = [], [], []
    for score in seeds:
        choose = [seed for seed in seeds if seed != score]
        for group in [[u] for u in units] if per_unit else [units]:
            scores = {c: mean(c, group, choose) for c in conditions}
            best = max(conditions, key=scores.__getitem__)
            picks.append({"units": [list(u) for u in group], "chosen_on": choose, "pick": best})
            picked += [acc[(best, s, d, score)] for s, d in group]
            reference += [acc[(REFERENCE, s, d, score)] for s, d in group]
    return picked, reference, picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("headroom", type=Path, help="headroom.py's JSON")
    parser.add_argument("out", type=Path, help="where the JSON goes")
    args = parser.parse_args()
    table = json.loads(args.headroom.read_text())
    acc = {
        (r["condition"], r["stream"], float(r["density"]), int(r["seed"])): r["online_accuracy"]
        for r in table["runs"]
    }
    conditions = sorted({c for c, *_ in acc})
    units = sorted({(s, d) for _, s, d, _ in acc})
    seeds = sorted({seed for *_, seed in acc})
    if len(seeds) < 2 or REFERENCE not in conditions:
        raise SystemExit(f"need ≥ 2 seeds and {REFERENCE!r} in {args.headroom}, got {seeds}")
    rows, picked = {}, {}
    for label, per_unit in (("one_pick_for_all_streams", False), ("pick_per_stream", True)):
        picked[label], reference, picks = cross_validated(acc, conditions, units, seeds, per_unit)
        diff = paired_interval(picked[label], reference)
        rows[label] = {
            "minus_imitation": {"mean": diff.mean, "low": diff.low, "high": diff.high},
            "units": len(reference),
            "picks": picks,
        }
        print(f"{label:26s} {diff.mean:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]")
    gap = paired_interval(picked["pick_per_stream"], picked["one_pick_for_all_streams"])
    print(f"{'knowing the stream adds':26s} {gap.mean:+.4f} [{gap.low:+.4f}, {gap.high:+.4f}]")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    report = {
        "machine": {**machine_info(), "commit": commit.strip()},
        "what": "leave-one-seed-out picks among headroom.py's conditions on the table's seeds: "
        "one for all streams (state-independent) against one per stream and density (an "
        "oracle that knows the stream), each minus the imitation at ERK",
        "source": {"path": str(args.headroom), "commit": table["machine"].get("commit")},
        "conditions": conditions,
        **rows,
        "knowing_the_stream_adds": {"mean": gap.mean, "low": gap.low, "high": gap.high},
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
