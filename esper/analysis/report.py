"""One self-contained HTML report of runs: comparison table, metadata, plots, detectors.

Plots are embedded as base64 PNG ``data:`` URIs and the styles are inline, so the file opens
anywhere with no other files or network access. It is written atomically
(:func:`esper.files.atomic_write_text`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from esper.analysis.compare import METRIC_LABELS, METRICS, compare_runs
from esper.analysis.plots import (
    accuracy_flops_pareto,
    accuracy_over_time,
    density_per_layer,
    learning_curves,
    surgery_raster,
)
from esper.analysis.runs import Run, RunLike, load_runs
from esper.files import atomic_write_text

__all__ = ["format_interval", "format_table", "render_report", "write_report"]

_MAX_RUN_PLOTS = 12
_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: .3em 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: .5em; }
.note { color: #666; font-size: .85em; } pre { background: #f7f7f7; padding: .5em; }
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(fig.axes[0].get_title())}" src="data:image/png;base64,{data}">'


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _denoise(half: float, mean: float) -> float:
    """Rounding noise of a zero-spread interval (``1e-16``) prints as 0."""
    return 0.0 if abs(half) <= 1e-9 * max(abs(mean), 1.0) else half


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """``compare_runs`` output as strings ``mean ± ci`` per metric (``±`` omitted when the
    interval is undefined), with ``runs`` and ``units`` counts, for printing."""
    out = pd.DataFrame(index=table.index)
    out["runs"] = table["runs"].astype(str)
    out["units"] = table["units"].astype(str)
    for metric in METRICS:
        mean, half = table[metric], table[f"{metric}_ci"]
        out[METRIC_LABELS[metric]] = [
            format_interval(m, h)
            for m, h in zip(mean.astype(float), half.astype(float), strict=True)
        ]
    return out


def format_interval(mean: float, half: float) -> str:
    """``mean ± half`` for printing (``mean`` alone when the interval is undefined)."""
    return _fmt(mean) if math.isnan(half) else f"{_fmt(mean)} ± {_fmt(_denoise(half, mean), 2)}"


def _metadata_table(runs: Sequence[Run]) -> str:
    rows = []
    for run in runs:
        meta = run.meta
        rows.append(
            {
                "run": run.run_id,
                "path": str(run.path),
                "command": meta.get("command", ""),
                "workload": meta.get("workload", ""),
                "policy": meta.get("policy", ""),
                "seed": meta.get("seed", ""),
                "reward": json.dumps(meta.get("reward", {}), sort_keys=True),
                "replicas": run.metrics.groupby(["trial_id", "replica_id"]).ngroups
                if not run.metrics.empty
                else 0,
                "surgeries": int(run.metrics["surgery_step"].nunique())
                if not run.metrics.empty
                else 0,
                "events": len(run.events),
            }
        )
    return pd.DataFrame(rows).to_html(index=False, escape=True, border=0)


def _detectors_section(runs: Sequence[Run]) -> str:
    try:
        from esper.analysis.detectors import detect_all
    except ImportError:
        return '<p class="note">Strategy detectors are not available in this installation.</p>'
    parts = []
    for run in runs:
        parts.append(f"<h3>{html.escape(run.run_id)}</h3>")
        try:
            found: dict[str, pd.DataFrame] = detect_all(run.events, run.metrics)
        except Exception as err:  # a detector bug must not lose the rest of the report
            parts.append(f"<pre>detectors failed: {html.escape(repr(err))}</pre>")
            continue
        counts = pd.DataFrame(
            {"detector": list(found), "episodes": [len(df) for df in found.values()]}
        )
        parts.append(counts.to_html(index=False, border=0))
        for name, frame in found.items():
            if len(frame):
                parts.append(f"<h4>{html.escape(name)} (first 5 of {len(frame)})</h4>")
                parts.append(frame.head(5).to_html(index=False, border=0, float_format="%.4g"))
    return "\n".join(parts)


def format_sweep_table(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`~esper.analysis.stretches.compare_sweep` table as strings, one column per
    group: counts, then ``mean ± ci`` per metric (the fitness first)."""
    from esper.analysis.stretches import metric_label

    fitness = table.attrs["fitness"]
    metrics = [c[: -len("_ci")] for c in table.columns if str(c).endswith("_ci")]
    rows = {key: table[key].astype(str) for key in ("members", "stretches", "iterations")}
    for metric in metrics:
        cells = [format_interval(float(m), float(h))
                 for m, h in zip(table[metric], table[f"{metric}_ci"], strict=True)]  # fmt: skip
        rows[metric_label(metric, fitness)] = pd.Series(cells, index=table.index)
    return pd.DataFrame(rows).T


def _comparison(runs: list[Run], by: str) -> list[str]:
    """The comparison section: of a sweep, by the values its members actually ran, per
    stretch between perturbations; of other runs, by their ``run.json`` key."""
    from esper.analysis.stretches import by_stretch, compare_sweep

    if by_stretch(runs, by):
        table = compare_sweep(runs, by=by)
        return [
            f"<h2>Comparison by {html.escape(by)}, as the members ran it</h2>",
            '<p class="note">One column per value that ran, over the iterations between '
            "perturbations that ran it; intervals over iterations (correlated: optimistic)."
            "</p>",
            format_sweep_table(table).to_html(escape=True, border=0),
        ]
    return [
        f"<h2>Comparison by {html.escape(by)}</h2>",
        format_table(compare_runs(runs, by=by)).to_html(escape=True, border=0),
    ]


def render_report(
    run_dirs: Sequence[RunLike], by: str = "reward", title: str = "Esper report"
) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    runs = load_runs(run_dirs)
    table = compare_runs(runs, by=by)
    per_run = compare_runs(runs, by="run_id")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{len(runs)} run(s), generated {now}. Intervals are 95% Student-t '
        "over seeds and replicas; – marks an undefined interval (one unit).</p>",
        *_comparison(runs, by),
        "<h2>Accuracy vs FLOPs</h2>",
        '<div class="grid">',
        _png(accuracy_flops_pareto(table, title=f"Accuracy vs FLOPs by {by}")),
        _png(accuracy_flops_pareto(per_run, title="Accuracy vs FLOPs per run")),
        "</div>",
        "<h2>Runs</h2>",
        _metadata_table(runs),
    ]
    for i, run in enumerate(runs):
        if i == _MAX_RUN_PLOTS:
            body.append(f'<p class="note">Plots of {len(runs) - i} more run(s) omitted.</p>')
            break
        body.append(f"<h3>{html.escape(run.run_id)}</h3>")
        body.append('<div class="grid">')
        body.append(_png(accuracy_over_time(run.metrics, title=f"{run.run_id}: accuracy")))
        body.append(_png(density_per_layer(run.events, title=f"{run.run_id}: density")))
        body.append("</div>")
        body.append(_png(surgery_raster(run.events, title=f"{run.run_id}: surgery raster")))
        if not run.learning_curve.empty:  # a run with a learner: how the policy learned
            title = f"{run.run_id}: learning curves (fitness per iteration)"
            body.append(_png(learning_curves(run.learning_curve, title=title)))
    body.append("<h2>Strategy detectors</h2>")
    body.append(_detectors_section(runs))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    run_dirs: Sequence[RunLike],
    out_path: str | os.PathLike[str],
    by: str = "reward",
    title: str = "Esper report",
) -> Path:
    """Write one self-contained HTML report of the runs.

    Args:
        run_dirs: Run directories (or loaded runs).
        out_path: The HTML file to write (parent directories are created).
        by: ``run.json`` key of the comparison table (see
            :func:`esper.analysis.compare.compare_runs`).
        title: Page title.

    Returns:
        The path written.

    Raises:
        esper.analysis.runs.RunError: a path that is not a run directory.
        esper.analysis.compare.CompareError: a bad ``by`` key.
    """
    return atomic_write_text(out_path, render_report(run_dirs, by=by, title=title))
