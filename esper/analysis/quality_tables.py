"""The markdown tables of ``esper bench quality``: the quality summary rendered for a reader.

:func:`markdown_tables` renders :func:`esper.analysis.quality.summarize`'s suite rows and
paired differences, :func:`markdown_runs` :func:`esper.analysis.quality.between_runs`'s spread
between training runs; every interval cell reads ``mean [low, high]`` (95% BCa). The numbers
are computed in :mod:`esper.analysis.quality`; this module only lays them out. Torch-free, like
the rest of :mod:`esper.analysis`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from esper.analysis.quality import SUITE

__all__ = ["markdown_runs", "markdown_tables"]


def _cell(entry: Mapping[str, Any], digits: int = 3) -> str:
    mean, (low, high) = entry["mean"], entry["ci"]
    if mean is None:
        return "—"
    if low is None or high is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown_tables(
    results: Sequence[Mapping[str, Any]],
    paired: Sequence[Mapping[str, Any]],
    allocations: Mapping[tuple[str, float], str] | None = None,
    options: Mapping[tuple[str, float], str] | None = None,
) -> str:
    """The suite averages (one row per policy and density) and the suite-level paired
    differences of the focus policy, as two markdown tables (mean [95% CI]).

    Args:
        results: :func:`summarize`'s ``results``.
        paired: :func:`summarize`'s ``paired``.
        allocations: The layer allocation each ``(policy, density)`` ran under, where one was
            chosen for it: an ``allocation`` column (``—`` for the others) and the paired
            rows name it.
        options: The config options each ``(policy, density)`` ran with, where they were
            chosen for it (an anchor's grid point): an ``options`` column, named in the
            paired rows too.
    """
    chosen = dict(allocations or {})
    tuned = dict(options or {})
    suite = [r for r in results if r["stream"] == SUITE]
    suite.sort(key=lambda r: (-r["density"], -(r["online_accuracy"]["mean"] or 0.0)))
    column = (" allocation |" if chosen else "") + (" options |" if tuned else "")
    lines = [
        f"| policy | density |{column} online accuracy | task-end accuracy | recovery (steps) "
        "| plasticity | FLOPs | reversal rate |",
        "|---|---|---|---|---|---|---|---|" + "---|" * (bool(chosen) + bool(tuned)),
    ]
    every = max((len(r.get("streams", ())) for r in suite), default=0)
    for r in suite:
        label = r["policy"]
        if len(r.get("streams", ())) < every:  # a partial suite: say which streams
            label += f" ({', '.join(r['streams'])} only)"
        key = (r["policy"], r["density"])
        cell = (f" {chosen.get(key, '—')} |" if chosen else "") + (
            f" {tuned.get(key, '—')} |" if tuned else ""
        )
        lines.append(
            f"| {label} | {r['density']:g} |{cell} {_cell(r['online_accuracy'])} "
            f"| {_cell(r['task_end_accuracy'])} | {_cell(r['recovery_steps'], 0)} "
            f"| {_cell(r['plasticity'])} | {_cell(r['flops'])} | {_cell(r['reversal_rate'])} |"
        )
    if chosen:
        lines += ["", "allocation: the layer allocation a baseline runs under, the better of those "
                  "tried on the validation seeds; —: the workload's own."]  # fmt: skip
    if tuned:
        lines += ["", "options: the config options an anchor runs with, the best point of its "
                  "grid on the validation seeds; —: none chosen."]  # fmt: skip
    rows = [p for p in paired if p["stream"] == SUITE and p["metric"] == "online_accuracy"]
    if rows:
        lines += [
            "",
            f"| {rows[0]['policy']} − vs | density | Δ online accuracy [95% CI] | n | reads |",
            "|---|---|---|---|---|",
        ]
        for p in rows:
            vs = p["vs"] if p["vs_density"] == p["density"] else f"{p['vs']} @ {p['vs_density']:g}"
            named = [m[k] for m in (chosen, tuned) if (k := (p["vs"], p["vs_density"])) in m]
            if named:
                vs += f" ({'; '.join(named)})"
            lines.append(
                f"| {vs} | {p['density']:g} | "
                f"{_cell({'mean': p['mean_diff'], 'ci': p['ci']})} | {p['n']} | {p['better']} |"
            )
    return "\n".join(lines) + "\n"


def markdown_runs(summary: Mapping[str, Any]) -> str:
    """:func:`between_runs` as a markdown table (one row per training run: its suite mean and
    its RL − imitation-only difference) and a line with the spread between runs."""
    lines = [
        f"| training run | suite {summary['metric'].replace('_', ' ')} "
        "| Δ RL − imitation only [95% CI] | n | reads |",
        "|---|---|---|---|---|",
    ]
    for e in summary["runs"]:
        name = f"{e['run']} ({e['policy']}" + (f", seed {e['seed']})" if "seed" in e else ")")
        mean = "—" if e["suite_mean"] is None else f"{e['suite_mean']:.3f}"
        rl = e["rl_over_imitation"]
        diff = "— | — | —" if rl is None else (
            f"{_cell({'mean': rl['mean_diff'], 'ci': rl['ci']})} | {rl['n']} | {rl['better']}"
        )  # fmt: skip
        lines.append(f"| {name} | {mean} | {diff} |")
    if summary["sd"] is not None:
        lines += [
            "",
            f"Between {len(summary['runs'])} training runs at density {summary['density']:g}: "
            f"min {summary['min']:.3f}, max {summary['max']:.3f}, sd {summary['sd']:.3f}.",
        ]
    return "\n".join(lines) + "\n"
