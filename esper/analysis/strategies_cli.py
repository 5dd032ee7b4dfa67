"""``esper strategies RUN``: run every emergent-strategy detector on a run and summarise them.

Prints one line per detector (episodes found and their key evidence) as a ``rich`` table, and
optionally writes every episode as JSON. A path that is not a run directory
(:func:`esper.analysis.runs.load_run`) or a run with an empty event log exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from esper.files import add_force_flag, atomic_write_text

__all__ = ["add_strategies_parser", "strategies_command"]


def _fmt(value: float, spec: str = ".3g") -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def _evidence_lazarus(df: pd.DataFrame) -> str:
    best = df.loc[df["net_gain"].astype(float).idxmax()]
    return (
        f"best net gain {_fmt(float(best['net_gain']), '+.3f')} at step {best['burst_step']}; "
        f"median recovery {_fmt(float(df['steps_to_recover'].astype(float).median()))} steps"
    )


def _evidence_breathing(df: pd.DataFrame) -> str:
    coupled = int(df["novelty_coupled"].astype(bool).sum())
    return (
        f"median period {_fmt(float(df['period'].astype(float).median()))} steps, "
        f"strength {_fmt(float(df['strength'].astype(float).median()), '.2f')}; "
        f"novelty r {_fmt(float(df['pearson_r'].astype(float).median()), '+.2f')} "
        f"({coupled}/{len(df)} coupled)"
    )


def _evidence_ghost(df: pd.DataFrame) -> str:
    return (
        f"overlap {_fmt(float(df['overlap_fraction'].astype(float).mean()), '.2f')} vs chance "
        f"{_fmt(float(df['chance'].astype(float).mean()), '.2f')} "
        f"(median lift {_fmt(float(df['lift'].astype(float).median()), '.2g')})"
    )


def _evidence_flipflop(df: pd.DataFrame) -> str:
    worst = df.loc[df["regrow_reprune_share"].astype(float).idxmax()]
    return (
        f"worst layer {worst['layer']} regrow-reprune share "
        f"{_fmt(float(worst['regrow_reprune_share']), '.2f')}; "
        f"weight {worst['worst_index']} flipped {worst['worst_flips']}×"
    )


def _evidence_retention(df: pd.DataFrame) -> str:
    layers = ", ".join(sorted({str(v) for v in df["layer"]})[:3])
    return (
        f"layers {layers}; Fisher ×{_fmt(float(df['fisher_ratio'].astype(float).median()), '.2g')}"
        f", prune rate ×{_fmt(float(df['rate_ratio'].astype(float).median()), '.2g')}"
    )


def _evidence_double_loss(df: pd.DataFrame) -> str:
    total = {c: int(df[c].astype(int).sum()) for c in
             ("double_loss_cases", "protected_weights", "tail_samples_kept")}  # fmt: skip
    return (
        f"{total['double_loss_cases']} double-loss cases; {total['protected_weights']} prunes "
        f"refused, {total['tail_samples_kept']} tail samples kept for their weights"
    )


_EVIDENCE: dict[str, Callable[[pd.DataFrame], str]] = {
    "lazarus": _evidence_lazarus,
    "breathing": _evidence_breathing,
    "ghost": _evidence_ghost,
    "flipflop": _evidence_flipflop,
    "retention": _evidence_retention,
    "double_loss": _evidence_double_loss,
}


def _evidence(name: str, episodes: pd.DataFrame) -> str:
    if episodes.empty:
        return "-"
    summarise = _EVIDENCE.get(name)
    return summarise(episodes) if summarise is not None else f"{len(episodes.columns)} columns"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def _to_json(results: dict[str, pd.DataFrame]) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [{k: _jsonable(v) for k, v in row.items()} for row in df.to_dict("records")]
        for name, df in results.items()
    }


def strategies_command(args: argparse.Namespace) -> int:
    """Handler of ``esper strategies``; returns the exit status."""
    from rich.console import Console
    from rich.table import Table

    from esper.analysis.detectors import detect_all
    from esper.analysis.runs import RunError, load_run

    run_dir: Path = args.run
    try:
        run = load_run(run_dir)
    except RunError as err:
        print(f"esper: {err}", file=sys.stderr)
        return 2
    problems = run.damage()
    if problems and not args.allow_incomplete:
        print(f"esper: run {run_dir} is damaged: {'; '.join(problems)}; pass "
              "--allow-incomplete to use what is there", file=sys.stderr)  # fmt: skip
        return 2
    for problem in problems:
        print(f"esper: warning: {problem}", file=sys.stderr)
    events, metrics = run.events, run.metrics
    if events.empty and metrics.empty:
        print(f"esper: run {run_dir} has an empty event log", file=sys.stderr)
        return 2
    results = detect_all(events, metrics)
    table = Table(title=f"Emergent strategies in {run_dir}")
    table.add_column("detector")
    table.add_column("episodes", justify="right")
    table.add_column("key evidence")
    for name, episodes in results.items():
        table.add_row(name, str(len(episodes)), _evidence(name, episodes))
    Console().print(table)
    if args.json is not None:
        payload = {"run": str(run_dir), "detectors": _to_json(results)}
        atomic_write_text(args.json, json.dumps(payload, indent=2))
    return 0


def add_strategies_parser(subparsers: Any) -> None:
    """Register ``esper strategies RUN [--json PATH]`` on an ``add_subparsers()`` object."""
    parser = subparsers.add_parser(
        "strategies",
        help="detect emergent strategies (Lazarus, breathing, ghost circuits, ...) in a run",
    )
    parser.add_argument("run", type=Path, metavar="RUN", help="run directory (runs/<name>)")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="PATH", help="write every episode here"
    )
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="read a run whose log misses parts (a warning names what is missing)",
    )
    add_force_flag(parser)
    parser.set_defaults(func=strategies_command)
