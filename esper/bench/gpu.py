"""Every GPU check in one prepared run, for a lent GPU machine (``benchmarks/gpu-checks.sh``).

A GPU machine is lent rarely and briefly, without Ray, MLflow or DuckDB, so this imports only
what the checks need: the CUDA benchmarks (``sense_vs_step_cuda``, ``semi_structured_speedup``,
``population_speedup_16_cuda``, ``cohort_rollout_speedup_8_cuda``), written to a results file
as ``esper bench perf`` writes them,
and a profile of one full reading on the GPU (the operators that take its time, by GPU time and
by host time), which names what to bring down next when ``sense_vs_step_cuda`` misses its goal.

Usage: ``python -m esper.bench.gpu --json PATH --profile PATH``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console

from esper.bench.perf import run_perf
from esper.errors import RunError
from esper.files import atomic_write_text
from esper.seeding import generator
from esper.workloads.hosts import make_host
from esper.workloads.sensors import NervousSystem

__all__ = ["GPU_BENCHMARKS", "main", "profile_sense"]

GPU_BENCHMARKS = (
    "sense_vs_step_cuda",
    "semi_structured_speedup",
    "population_speedup_16_cuda",
    "cohort_rollout_speedup_8_cuda",
)
_MODULES = ("esper.bench.perf_sense", "esper.bench.perf_scalpel", "esper.bench.perf_throughput")


def profile_sense(
    path: Path, device: torch.device, hidden: tuple[int, ...] = (4096, 4096), rows: int = 25
) -> None:
    """Write the operator tables of one full reading of a 784-``hidden``-10 MLP on ``device``
    (batch 128, after three warm-up readings) to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_host("mlp", (784,), 10, hidden=hidden).to(device)
    g = generator(0, "bench", "gpu", "profile")
    x = torch.randn(128, 784, generator=g).to(device)
    y = torch.randint(0, 10, (128,), generator=g).to(device)
    system = NervousSystem()
    system.prepare(model, x)
    for _ in range(3):
        system.sense(model, x, y)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        system.sense(model, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    shape = "-".join(str(n) for n in (784, *hidden, 10))
    tables = [f"one sense() of the {shape} MLP at batch 128 on {device}"]
    keys = ["self_cpu_time_total"] + (["self_device_time_total"] if device.type == "cuda" else [])
    for key in keys:
        tables.append(f"\n-- by {key} --\n" + events.table(sort_by=key, row_limit=rows))
    atomic_write_text(path, "\n".join(tables) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esper.bench.gpu", description=__doc__)
    parser.add_argument("--json", type=Path, required=True, help="results file to write")
    parser.add_argument("--profile", type=Path, required=True, help="profile tables to write")
    args = parser.parse_args(argv)
    console = Console()
    status = 0
    try:
        run_perf(GPU_BENCHMARKS, args.json, console, modules=_MODULES)
    except RunError as err:  # the others are written; the profile still runs
        console.print(f"[red]{err}[/red]")
        status = 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    profile_sense(args.profile, device)
    console.print(f"profile of one reading on {device} written to {args.profile}")
    return status


if __name__ == "__main__":
    sys.exit(main())
