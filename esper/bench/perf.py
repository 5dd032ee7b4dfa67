"""``esper bench perf``: run the performance benchmarks and record them as JSON."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from esper import allocator
from esper.bench.harness import PERF, BenchResult, SkipBenchmark, write_results
from esper.errors import RunError
from esper.registry import UnknownNameError

__all__ = ["BENCHMARK_MODULES", "load_benchmarks", "run_perf"]

BENCHMARK_MODULES = (
    "esper.bench.perf_scalpel",
    "esper.bench.perf_sensors",
    "esper.bench.perf_sense",
    "esper.bench.perf_events",
    "esper.bench.perf_platform",
    "esper.bench.perf_sweep",
    "esper.bench.perf_throughput",
)
"""Modules whose import registers benchmarks in :data:`~esper.bench.harness.PERF`."""


def load_benchmarks(modules: Sequence[str] = BENCHMARK_MODULES) -> list[str]:
    """Import the benchmark modules; returns the registered benchmark names."""
    for module in modules:
        importlib.import_module(module)
    return PERF.names()


def run_perf(
    only: Sequence[str] | None = None,
    json_path: Path | None = None,
    console: Console | None = None,
    modules: Sequence[str] = BENCHMARK_MODULES,
) -> dict[str, BenchResult]:
    """Run the selected benchmarks (all when ``only`` is empty), print a table, write JSON.

    ``modules`` narrows the imports (a GPU machine without Ray imports the GPU ones only).

    A benchmark that raises is reported and listed under ``skipped`` as ``FAILED: …``; the
    others still run and are written, then :class:`~esper.errors.RunError` names the failures.

    Raises:
        UnknownNameError: a name in ``only`` is not a registered benchmark.
        esper.errors.RunError: a benchmark failed (after the results are written).
    """
    console = console or Console()
    allocator.from_environment()  # as every process that runs organisms
    names = load_benchmarks(modules)
    selected = list(only) if only else names
    for name in selected:
        if name not in PERF:
            raise UnknownNameError("benchmark", name, names)
    torch.manual_seed(0)
    results: dict[str, BenchResult] = {}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name in selected:
        console.print(f"[bold]{name}[/bold] …")
        try:
            results[name] = PERF[name]()
        except SkipBenchmark as why:
            skipped[name] = str(why)
            console.print(f"  skipped: {why}")
            continue
        except Exception as err:  # the others still run and are written (a lent GPU is rare)
            failed[name] = f"FAILED: {type(err).__name__}: {err}"
            console.print(f"  [red]{failed[name]}[/red]")
            console.print_exception()
            continue
        r = results[name]
        verdict = "[green]met[/green]" if r.met else "[red]missed[/red]"
        limit = f"; limit {r.limit:.3f}" if r.limit is not None else ""
        console.print(f"  ratio {r.ratio:.3f} (goal {r.direction} {r.goal:.3g}{limit}) {verdict}")
    table = Table(title="esper bench perf")
    for column in ("benchmark", "ours (s)", "anchor (s)", "ratio", "goal", "met"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for name, r in results.items():
        table.add_row(
            name,
            f"{r.ours_s:.4g}",
            f"{r.anchor_s:.4g}",
            f"{r.ratio:.3f}",
            f"{r.direction} {r.goal:.3g}",
            "yes" if r.met else "NO",
        )
    for name in skipped:
        table.add_row(name, "—", "—", "—", "—", "skipped")
    console.print(table, width=max(console.width, 110))
    for name, r in results.items():
        console.print(f"[dim]{name}: vs {r.anchor}[/dim]")
    for name, reason in skipped.items():
        console.print(f"[dim]{name}: skipped, {reason}[/dim]")
    if json_path is not None:
        write_results(json_path, results, {**skipped, **failed})
        console.print(f"results written to {json_path}")
    if failed:
        raise RunError(f"{len(failed)} benchmarks failed: " + "; ".join(
            f"{n}: {why}" for n, why in failed.items()))  # fmt: skip
    return results
