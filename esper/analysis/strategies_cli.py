"""``esper strategies RUN``: run every emergent-strategy detector on a run and summarise them.

Prints one line per detector (episodes found and their key evidence) as a ``rich`` table, and
optionally writes every episode as JSON. A run directory without an event log exits with
status 2.
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

from esper.files import atomic_write_text

__all__ = ["add_strategies_parser", "strategies_command"]


def _read_table_direct(run_dir: Path, table: str) -> pd.DataFrame:
    """Read ``RUN/<table>`` as a hive-partitioned Parquet dataset (empty when absent)."""
    import pyarrow.dataset as ds

    path = run_dir / table
    if not path.is_dir() or not any(path.rglob("*.parquet")):
        return pd.DataFrame()
    dataset = ds.dataset(
        path,
        format="parquet",
        partitioning="hive",
        exclude_invalid_files=True,
        ignore_prefixes=[".", "_"],
    )
    return dataset.to_table().to_pandas()


def _load(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's ``events`` and ``metrics`` tables, through ``EventLog`` when it is available."""
    try:
        from esper.analysis.event_log import EventLog
    except ImportError:
        return _read_table_direct(run_dir, "events"), _read_table_direct(run_dir, "metrics")
    log = EventLog.open(run_dir)
    tables: list[pd.DataFrame] = []
    for table in ("events", "metrics"):
        try:
            tables.append(log.to_pandas(table))
        except (FileNotFoundError, KeyError, ValueError):
            tables.append(pd.DataFrame())
    return tables[0], tables[1]


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
    worst = df.loc[df["rate"].astype(float).idxmax()]
    return (
        f"worst layer {worst['layer']} rate {_fmt(float(worst['rate']), '.2f')}; "
        f"weight {worst['worst_index']} flipped {worst['worst_flips']}×"
    )


def _evidence_retention(df: pd.DataFrame) -> str:
    layers = ", ".join(sorted({str(v) for v in df["layer"]})[:3])
    return (
        f"layers {layers}; Fisher ×{_fmt(float(df['fisher_ratio'].astype(float).median()), '.2g')}"
        f", prune rate ×{_fmt(float(df['rate_ratio'].astype(float).median()), '.2g')}"
    )


_EVIDENCE: dict[str, Callable[[pd.DataFrame], str]] = {
    "lazarus": _evidence_lazarus,
    "breathing": _evidence_breathing,
    "ghost": _evidence_ghost,
    "flipflop": _evidence_flipflop,
    "retention": _evidence_retention,
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

    run_dir: Path = args.run
    if not run_dir.is_dir():
        print(f"esper: run {run_dir} does not exist", file=sys.stderr)
        return 2
    if not (run_dir / "events").is_dir():
        print(f"esper: run {run_dir} has no event log ({run_dir / 'events'})", file=sys.stderr)
        return 2
    events, metrics = _load(run_dir)
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
    parser.set_defaults(func=strategies_command)
