"""The ``esper compare`` and ``esper report`` subcommands.

``esper compare RUN... --by reward [--json PATH] [--plots DIR]`` prints a table of mean ± 95%
interval over seeds and replicas per group; ``esper report RUN... --out report.html`` writes a
self-contained HTML report. A missing run or an unknown ``--by`` key exits with status 2.

On a sweep (its members' learning curves record their searched values), ``--by reward``,
``--by member`` and ``--by KEY`` for a searched key group what the members ran, stretch by
stretch between perturbations (:mod:`esper.analysis.stretches`): one column per shaping that
ran, with intervals over its iterations.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from esper.files import add_force_flag, atomic_write, atomic_write_text

if TYPE_CHECKING:
    from esper.analysis.runs import Run

__all__ = ["add_compare_parser", "add_report_parser", "compare_main", "report_main"]

_BY_HELP = (
    "run.json key to group by: reward, policy, workload, seed, run_id, or any key "
    "(dots for nested keys, e.g. config.workload); on a sweep, reward, member or a searched key "
    "(reward.beta, policy.params.heat_tau) groups what its members ran between perturbations"
)
_METRIC_HELP = (
    "a sweep's fitness column of its learning curves (default: the sweep's search.metric "
    "where recorded, else fitness, else online_accuracy)"
)


_INCOMPLETE_HELP = (
    "use runs that did not complete (killed, failed, running) or whose logs miss parts, with a "
    "warning naming what is missing"
)


def _error(message: str) -> int:
    print(f"esper: {message}", file=sys.stderr)
    return 2


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return _json_value(value.item())
    return value


def _write_json(table: Any, by: str, path: Path, **extra: Any) -> None:
    rows = [
        {by: str(label), **{k: _json_value(v) for k, v in row.items()}}
        for label, row in table.to_dict(orient="index").items()
    ]
    payload = {"by": by, "confidence": 0.95, **extra, "groups": rows}
    atomic_write_text(path, json.dumps(payload, indent=2))


def _sweep_figures(runs: list[Run], table: Any, by: str) -> dict[str, Any]:
    """A sweep's own plots: fitness against each searched value (one point per stretch),
    accuracy against FLOPs per group, and each run's learning curves."""
    from esper.analysis.plots import accuracy_flops_pareto, fitness_by_value, learning_curves
    from esper.analysis.stretches import searched_keys, stretch_summary

    fitness = table.attrs["fitness"]
    keys = list(dict.fromkeys(k for r in runs for k in searched_keys(r.learning_curve)))
    title = f"{fitness.replace('_', ' ')} by searched value (one point per stretch)"
    figures = {
        "fitness_by_value.png": fitness_by_value(
            stretch_summary(runs, fitness), keys, fitness, title
        ),
        "pareto_by_group.png": accuracy_flops_pareto(
            table, flops="r_flops", title=f"Accuracy vs FLOPs by {by}"
        ),
    }
    for run in runs:
        figures[f"{_safe(run.run_id)}_learning.png"] = learning_curves(
            run.learning_curve, metric=fitness, title=f"{run.run_id}: learning curves"
        )
    return figures


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _write_plots(runs: list[Run], table: Any, by: str, directory: Path) -> list[Path]:
    from esper.analysis.compare import compare_runs
    from esper.analysis.plots import (
        accuracy_flops_pareto,
        accuracy_over_time,
        density_per_layer,
        surgery_raster,
    )

    directory.mkdir(parents=True, exist_ok=True)
    if "fitness" in table.attrs:  # a sweep's stretches
        figures = _sweep_figures(runs, table, by)
    else:
        figures = {
            "pareto_by_group.png": accuracy_flops_pareto(table, title=f"Accuracy vs FLOPs by {by}"),
        }
    figures["pareto_by_run.png"] = accuracy_flops_pareto(compare_runs(runs, by="run_id"))
    for run in runs:
        safe = _safe(run.run_id)
        figures[f"{safe}_accuracy.png"] = accuracy_over_time(run.metrics, title=run.run_id)
        figures[f"{safe}_density.png"] = density_per_layer(run.events, title=run.run_id)
        figures[f"{safe}_raster.png"] = surgery_raster(run.events, title=run.run_id)
    written = []
    for name, fig in figures.items():
        # The temporary's name ends in .tmp: the format is given, not guessed from it.
        written.append(atomic_write(directory / name, partial(fig.savefig, format="png", dpi=100)))
    return written


def _incomplete(runs: list[Run], allowed: bool, console: Console) -> str | None:
    """The refusal to read runs that did not complete or whose logs are damaged (missing,
    truncated or duplicated parts), or ``None``: each such run is then named in a warning
    (when ``allowed``), its unreadable parts left out."""
    problems = [f"{r.path} did not complete ({r.state})" for r in runs if not r.finished]
    problems += [f"{r.path}: {p}" for r in runs for p in r.damage()]
    if problems and not allowed:
        return "; ".join(problems) + "; pass --allow-incomplete to use what is there"
    for problem in problems:
        console.print(f"[yellow]warning:[/yellow] {problem}")
    return None


def compare_main(args: argparse.Namespace) -> int:
    """Handler of ``esper compare``; returns the exit status."""
    from esper.analysis.compare import CompareError, compare_runs
    from esper.analysis.report import format_sweep_table, format_table
    from esper.analysis.runs import RunError, load_runs
    from esper.analysis.stretches import by_stretch, compare_sweep

    console = Console()
    try:
        runs = load_runs(args.runs)
        if (refusal := _incomplete(runs, args.allow_incomplete, console)) is not None:
            return _error(refusal)
        sweep = by_stretch(runs, args.by)
        if sweep:
            table = compare_sweep(runs, by=args.by, metric=args.metric)
        elif args.metric is not None:
            return _error(f"--metric chooses a sweep's fitness; --by {args.by} groups runs")
        else:
            table = compare_runs(runs, by=args.by)
    except (RunError, CompareError) as err:
        return _error(str(err))
    if sweep:  # one column per group: long labels and many metrics fit
        shown = format_sweep_table(table)
        title = (
            f"Sweep compared by {args.by}, as its members ran between perturbations "
            "(mean ± 95% CI over iterations, which are correlated within a stretch)"
        )
    else:
        shown = format_table(table).T
        title = f"Runs compared by {args.by} (mean ± 95% CI over seeds and replicas)"
    rich_table = Table(title=title)
    rich_table.add_column("metric")
    for label in shown.columns:
        rich_table.add_column(str(label), justify="right", overflow="fold")
    for metric, row in shown.iterrows():
        rich_table.add_row(str(metric), *row.tolist())
    console.print(rich_table)
    if args.json is not None:
        extra = {"fitness": table.attrs["fitness"], "over": "iterations"} if sweep else {}
        _write_json(table, args.by, args.json, **extra)
        console.print(f"wrote {args.json}")
    if args.plots is not None:
        written = _write_plots(runs, table, args.by, args.plots)
        console.print(f"wrote {len(written)} plots to {args.plots}")
    return 0


def report_main(args: argparse.Namespace) -> int:
    """Handler of ``esper report``; returns the exit status."""
    from esper.analysis.compare import CompareError
    from esper.analysis.report import write_report
    from esper.analysis.runs import RunError, load_runs

    console = Console()
    try:
        runs = load_runs(args.runs)
        if (refusal := _incomplete(runs, args.allow_incomplete, console)) is not None:
            return _error(refusal)
        out = write_report(runs, args.out, by=args.by)
    except (RunError, CompareError) as err:
        return _error(str(err))
    console.print(f"wrote {out}")
    return 0


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``compare`` to an ``argparse`` subparsers object; returns the new parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "compare",
        help="compare runs: mean ± 95%% CI over seeds and replicas, grouped by a run.json key",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    parser.add_argument("--by", default="reward", metavar="KEY", help=_BY_HELP)
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="write the table as JSON here"
    )
    parser.add_argument(
        "--plots", type=Path, default=None, metavar="DIR", help="write PNG plots into DIR"
    )
    parser.add_argument("--metric", default=None, metavar="COLUMN", help=_METRIC_HELP)
    parser.add_argument("--allow-incomplete", action="store_true", help=_INCOMPLETE_HELP)
    add_force_flag(parser)
    parser.set_defaults(func=compare_main)
    return parser


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to an ``argparse`` subparsers object; returns the new parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="write one self-contained HTML report (table, plots, detectors)"
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    parser.add_argument(
        "--out", type=Path, default=Path("report.html"), metavar="PATH", help="HTML file to write"
    )
    parser.add_argument("--by", default="reward", metavar="KEY", help=_BY_HELP)
    parser.add_argument("--allow-incomplete", action="store_true", help=_INCOMPLETE_HELP)
    add_force_flag(parser)
    parser.set_defaults(func=report_main)
    return parser
