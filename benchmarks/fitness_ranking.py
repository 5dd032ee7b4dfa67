"""Does PBT's fitness rank members, or the stream's phase? (issue 23)

A population of demo-sized members (``esper demo``'s sizes: digits MLP at 10% density, 2
replicas on permuted and rotated digits, episodes of 3 surgeries of 25 SGD steps) runs side by
side in one Ray session, every member on the same seeds and hence the same streams, as a sweep's
trials are; they differ in an Emrakul parameter (``max_turnover``, a sweepable key), and one
member is handicapped: its Specialists are replaced by random surgery
(``policy.params.specialists=false``, ``policy.params.fixed_rule=random``). Members are stepped
in lockstep (PBT's ``synch``) and compared every ``perturbation_interval`` iterations, with no
exploit, so the handicap stays where it was put. Several populations run on different root
seeds.

Measures, for the old fitness (the iteration's raw ``online_accuracy``), the new one
(``fitness``: relative accuracy against the RigL twins, smoothed over ``fitness_window``) and
the two steps between them (raw ``episode_accuracy``; unsmoothed ``relative_accuracy``):

(a) how often the handicapped member ranks last at the perturbation points (goal ≥ 95%);
(b) the spread between members (standard deviation of the members' means over the iterations)
    against the noise within a member (its standard deviation over iterations, averaged over
    members), with the handicapped member and among the others only;
(c) among the unhandicapped members, how often a pair is ordered at a perturbation point as by
    its mean ``episode_accuracy`` over the whole run (the long-run quantity a search is after).

Also the twins' cost: seconds per member iteration with and without them, alternated.

Usage: ``.venv/bin/python benchmarks/fitness_ranking.py --json PATH [--seeds 0,1,2]
[--iterations 16]``. About 10 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from rich.console import Console

from esper.bench.harness import machine_info
from esper.conf import compose
from esper.files import atomic_write_text
from esper.platform.population import Population
from esper.platform.runs import create_run

BASE = (
    "policy=emrakul",
    "search=pbt",  # fitness against RigL twins, the sweeps' default
    "cluster=laptop",
    "policy.density=0.1",
    "policy.surgery_interval=25",
    "policy.training.replicas=2",
    "policy.training.rollout=3",
    "policy.training.workloads=[digits_permuted,digits_rotated]",
    "search.perturbation_interval=2",
)
"""``esper demo``'s member (its ``DEMO_OVERRIDES``, less the sweep's length)."""

MEMBERS: dict[str, tuple[str, ...]] = {
    "turnover0.2": ("+policy.params.max_turnover=0.2",),
    "turnover0.5": ("+policy.params.max_turnover=0.5",),
    "turnover0.8": ("+policy.params.max_turnover=0.8",),
    "handicapped": ("+policy.params.specialists=false", "+policy.params.fixed_rule=random"),
}
"""The members: three Emrakul surgeons of different turnover scales (in-process, untrained,
0.70-0.75 online accuracy over 600 steps), and one that surgeons at random (about 0.11)."""

HANDICAPPED = "handicapped"

MEASURES = {
    "old: online_accuracy (raw, last iteration)": "online_accuracy",
    "episode_accuracy (raw, the whole episode)": "episode_accuracy",
    "relative_accuracy (vs twin, unsmoothed)": "relative_accuracy",
    "new: fitness (vs twin, smoothed)": "fitness",
}
"""What each fitness candidate reads from an iteration's metrics."""


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def run_population(seed: int, iterations: int, root: Path, console: Console) -> dict[str, Any]:
    """Every member of :data:`MEMBERS` for ``iterations`` iterations in lockstep; returns each
    member's iteration metrics (the measures only)."""
    configs = {
        name: compose([*BASE, f"experiment.seed={seed}", f"cluster.storage_path={root}", *extra])
        for name, extra in MEMBERS.items()
    }
    run = root / f"fitness-ranking-s{seed}"
    create_run(run, configs[HANDICAPPED], "bench", "digits_permuted", "emrakul")
    members = {
        name: Population(cfg, run, name, run / "state" / name) for name, cfg in configs.items()
    }
    series: dict[str, list[dict[str, float]]] = {name: [] for name in members}
    try:
        for iteration in range(1, iterations + 1):
            for name, member in members.items():
                metrics = member.step()
                series[name].append({m: float(metrics[m]) for m in MEASURES.values()})
            row = " ".join(f"{n}={series[n][-1]['fitness']:+.3f}" for n in members)
            console.print(f"seed {seed} iteration {iteration}: fitness {row}")
    finally:
        for member in members.values():
            member.close()
    return series


def last_rate(runs: Sequence[dict[str, Any]], metric: str, interval: int) -> dict[str, Any]:
    """How often the handicapped member has the lowest ``metric`` (strictly) at iterations
    ``interval, 2·interval, ...``."""
    last = total = 0
    for series in runs:
        iterations = len(series[HANDICAPPED])
        for i in range(interval - 1, iterations, interval):
            values = {name: rows[i][metric] for name, rows in series.items()}
            others = [v for n, v in values.items() if n != HANDICAPPED]
            total += 1
            last += values[HANDICAPPED] < min(others)
    return {"last": last, "points": total, "rate": last / total if total else float("nan")}


def spread(runs: Sequence[dict[str, Any]], metric: str, members: Sequence[str]) -> dict[str, Any]:
    """Between ``members`` (std of their means over the iterations) against within a member
    (std over iterations, averaged over members), averaged over the populations."""
    between, within = [], []
    for series in runs:
        values = {n: [r[metric] for r in series[n]] for n in members}
        between.append(statistics.stdev(statistics.fmean(v) for v in values.values()))
        within.append(statistics.fmean(statistics.stdev(v) for v in values.values()))
    b, w = statistics.fmean(between), statistics.fmean(within)
    return {"between": b, "within": w, "ratio": b / w}


def pairs_ordered(runs: Sequence[dict[str, Any]], metric: str, interval: int) -> dict[str, Any]:
    """How often two unhandicapped members are ordered by ``metric`` at a perturbation point
    as by their mean ``episode_accuracy`` over the whole population run (ties: not ordered)."""
    agree = total = 0
    for series in runs:
        normal = [n for n in series if n != HANDICAPPED]
        truth = {n: statistics.fmean(r["episode_accuracy"] for r in series[n]) for n in normal}
        for i in range(interval - 1, len(series[HANDICAPPED]), interval):
            for a, b in itertools.combinations(normal, 2):
                total += 1
                agree += (series[a][i][metric] - series[b][i][metric]) * (truth[a] - truth[b]) > 0
    return {"agree": agree, "pairs": total, "rate": agree / total if total else float("nan")}


def twin_cost(root: Path, iterations: int) -> dict[str, Any]:
    """Seconds per iteration of one member with and without twins, alternated."""
    create_run(root / "cost", compose(list(BASE)), "bench", "digits_permuted", "emrakul")
    members = {
        reference: Population(
            compose([*BASE, f"cluster.storage_path={root}", f"search.reference={reference}",
                     f"search.metric={'fitness' if reference == 'rigl' else 'online_accuracy'}"]),
            root / "cost", f"cost-{reference}", root / "cost" / "state" / reference,
        )
        for reference in ("none", "rigl")
    }  # fmt: skip
    seconds: dict[str, list[float]] = {r: [] for r in members}
    try:
        for _ in range(iterations):
            for reference, member in members.items():
                start = time.perf_counter()
                member.step()
                seconds[reference].append(time.perf_counter() - start)
    finally:
        for member in members.values():
            member.close()
    medians = {r: statistics.median(s[1:]) for r, s in seconds.items()}  # the first warms up
    return {"seconds_per_iteration": medians, "ratio": medians["rigl"] / medians["none"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2", help="root seeds, comma-separated")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--cost-iterations", type=int, default=4)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    console, start = Console(), time.perf_counter()
    interval = compose(list(BASE)).search.perturbation_interval
    window = compose(list(BASE)).search.fitness_window
    ray.init(num_cpus=compose(list(BASE)).cluster.num_cpus, include_dashboard=False,
             log_to_driver=False)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            runs = [run_population(seed, args.iterations, root, console) for seed in seeds]
            cost = twin_cost(root, args.cost_iterations) if args.cost_iterations > 1 else None
    finally:
        ray.shutdown()
    normal = [n for n in MEMBERS if n != HANDICAPPED]
    summary = {
        label: {
            "ranks_handicapped_last": last_rate(runs, metric, interval),
            "spread_all_members": spread(runs, metric, list(MEMBERS)),
            "spread_unhandicapped": spread(runs, metric, normal),
            "pairs_ordered_as_run_mean": pairs_ordered(runs, metric, interval),
        }
        for label, metric in MEASURES.items()
    }
    for label, row in summary.items():
        rank, all_, rest = (row["ranks_handicapped_last"], row["spread_all_members"],
                            row["spread_unhandicapped"])  # fmt: skip
        pairs = row["pairs_ordered_as_run_mean"]
        console.print(
            f"{label}: handicapped last {rank['last']}/{rank['points']} ({rank['rate']:.0%}); "
            f"between/within {all_['between']:.3f}/{all_['within']:.3f} = {all_['ratio']:.2f} "
            f"(unhandicapped: {rest['between']:.3f}/{rest['within']:.3f} = {rest['ratio']:.2f}); "
            f"pairs ordered as the run's mean {pairs['agree']}/{pairs['pairs']}"
        )
    if cost is not None:
        console.print(f"twins' cost: ×{cost['ratio']:.2f} per iteration {cost}")
    new = summary["new: fitness (vs twin, smoothed)"]["ranks_handicapped_last"]["rate"]
    seconds = time.perf_counter() - start
    payload = {
        "machine": machine_info(),
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "setup": {
            "overrides": list(BASE),
            "members": {k: list(v) for k, v in MEMBERS.items()},
            "seeds": seeds,
            "iterations": args.iterations,
            "perturbation_interval": interval,
            "fitness_window": window,
        },
        "goal": {
            "measure": "new fitness ranks the handicapped member last",
            "rate": 0.95,
            "measured": new,
            "met": new >= 0.95,
        },
        "summary": summary,
        "twin_cost": cost,
        "seconds": seconds,
        "runs": [{"seed": s, "series": r} for s, r in zip(seeds, runs, strict=True)],
    }
    atomic_write_text(args.json, json.dumps(payload, indent=1, default=float) + "\n")
    console.print(f"written to {args.json} in {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
