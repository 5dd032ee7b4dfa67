"""Matplotlib figures of runs (Agg backend; every function returns a new ``Figure``).

* :func:`accuracy_over_time`: online accuracy per replica by surgery step, drift markers.
* :func:`density_per_layer`: each layer's density by surgery step (the breathing plot).
* :func:`surgery_raster`: layer × surgery step, prune and regrow counts in two colours.
* :func:`plasticity_curves`: end-of-task accuracy by task per condition (loss of plasticity).
* :func:`accuracy_flops_pareto`: accuracy against FLOPs, one point per run or group, with the
  Pareto frontier (higher accuracy, fewer FLOPs).
* :func:`fitness_by_value`: a sweep's fitness against each searched value, one point per
  stretch (the values a member ran between two perturbations).

Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas directly (no pyplot
state, no global backend switch), so they are safe in servers, threads and notebooks; call
``fig.savefig`` or display them (the last expression of a notebook cell).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from esper.config import HP_PREFIX

__all__ = [
    "PRUNE_COLOR",
    "REGROW_COLOR",
    "accuracy_flops_pareto",
    "accuracy_over_time",
    "density_per_layer",
    "drift_steps",
    "fitness_by_value",
    "learning_curves",
    "pareto_front",
    "plasticity_curves",
    "surgery_raster",
]

PRUNE_COLOR = "#d62728"
REGROW_COLOR = "#1f77b4"
_DRIFT_COLOR = "#7f7f7f"


def _figure(width: float = 8.0, height: float = 3.6) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def drift_steps(metrics: pd.DataFrame) -> list[int]:
    """Surgery steps at which ``task_index`` changed, over every replica (sorted, unique)."""
    steps: set[int] = set()
    if metrics.empty:
        return []
    keys = [k for k in ("run_id", "trial_id", "replica_id") if k in metrics.columns]
    groups = metrics.groupby(keys, sort=False) if keys else [((), metrics)]
    for _, unit in groups:
        unit = unit.sort_values("surgery_step")
        changed = unit["task_index"].to_numpy()
        mask = np.r_[False, changed[1:] != changed[:-1]]
        steps.update(int(s) for s in unit["surgery_step"].to_numpy()[mask])
    return sorted(steps)


def accuracy_over_time(metrics: pd.DataFrame, title: str = "Online accuracy") -> Figure:
    """Online accuracy by surgery step, one line per (run, trial, replica), drift markers.

    Args:
        metrics: ``metrics`` rows (``surgery_step``, ``online_accuracy``, ``task_index`` and the
            unit keys).
        title: Axes title.

    Returns:
        A figure with one line per replica and a dashed vertical line at each task change.
    """
    fig = _figure()
    ax = fig.add_subplot()
    keys = [k for k in ("run_id", "trial_id", "replica_id") if k in metrics.columns]
    if not metrics.empty:
        for key, unit in metrics.groupby(keys, sort=True):
            unit = unit.sort_values("surgery_step")
            label = "/".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            ax.plot(unit["surgery_step"], unit["online_accuracy"], lw=1.2, label=label)
    for i, step in enumerate(drift_steps(metrics)):
        ax.axvline(step, color=_DRIFT_COLOR, ls="--", lw=0.9, label="drift" if i == 0 else None)
    ax.set(xlabel="surgery step", ylabel="online accuracy", title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0] and len(ax.lines) <= 12:
        ax.legend(fontsize=7, loc="lower right")
    return fig


def learning_curves(
    curve: pd.DataFrame, metric: str = "online_accuracy", title: str = "Learning curves"
) -> Figure:
    """A member's fitness (``metric``) by learner iteration, one line per trial.

    Args:
        curve: :attr:`Run.learning_curve <esper.analysis.runs.Run.learning_curve>` rows
            (``trial``, ``iteration``, ``metric``).
        metric: The column to plot.
        title: Axes title.
    """
    fig = _figure()
    ax = fig.add_subplot()
    if not curve.empty and metric in curve.columns:
        for trial, rows in curve.groupby("trial", sort=True):
            rows = rows.sort_values("iteration")
            ax.plot(rows["iteration"], rows[metric], lw=1.2, marker=".", label=str(trial))
    ax.set(xlabel="learner iteration", ylabel=metric.replace("_", " "), title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0] and len(ax.lines) <= 12:
        ax.legend(fontsize=7, loc="lower right")
    return fig


def density_per_layer(events: pd.DataFrame, title: str = "Density per layer") -> Figure:
    """The breathing plot: each layer's ``density_after`` by surgery step.

    The last event of a layer in a surgery gives its density there; replicas are averaged.
    Organism-wide events (empty ``layer``) are skipped.

    Args:
        events: ``events`` rows (``layer``, ``surgery_step``, ``density_after``).
        title: Axes title.

    Returns:
        A figure with one line per layer.
    """
    fig = _figure()
    ax = fig.add_subplot()
    if not events.empty:
        rows = events[(events["layer"] != "") & events["density_after"].notna()]
        keys = [k for k in ("run_id", "trial_id", "replica_id") if k in rows.columns]
        last = rows.sort_values("surgery_step", kind="stable")
        last = last.groupby([*keys, "layer", "surgery_step"], sort=False).tail(1)
        per_step = last.groupby(["layer", "surgery_step"])["density_after"].mean()
        for layer, series in per_step.groupby(level="layer", sort=True):
            steps = series.index.get_level_values("surgery_step")
            ax.plot(steps, series.to_numpy(), lw=1.2, label=str(layer))
    ax.set(xlabel="surgery step", ylabel="density", title=title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    return fig


def surgery_raster(events: pd.DataFrame, title: str = "Surgery raster") -> Figure:
    """Layer × surgery step raster of pruned and regrown weight counts.

    Each (layer, surgery step) with prunes gets a red mark just above the layer's row, with
    regrowth a blue mark just below it; marker area grows with the count (summed over
    replicas).

    Args:
        events: ``events`` rows (``layer``, ``surgery_step``, ``action``, ``count``).
        title: Axes title.

    Returns:
        A figure with two scatter collections: prune, then regrow.
    """
    fig = _figure(height=max(2.4, 0.5 + 0.45 * events["layer"].nunique()))
    ax = fig.add_subplot()
    rows = events[
        (events["layer"] != "") & events["action"].isin(["prune", "regrow"]) & (events["count"] > 0)
    ]
    layers = sorted(events.loc[events["layer"] != "", "layer"].unique())
    position = {layer: i for i, layer in enumerate(layers)}
    counts = rows.groupby(["action", "layer", "surgery_step"])["count"].sum()
    peak = float(counts.max()) if len(counts) else 1.0
    for action, color, offset in (("prune", PRUNE_COLOR, 0.15), ("regrow", REGROW_COLOR, -0.15)):
        part = counts[action] if action in counts.index.get_level_values(0) else counts.iloc[:0]
        x = part.index.get_level_values("surgery_step") if len(part) else []
        y = [position[layer] + offset for layer in part.index.get_level_values("layer")]
        sizes = 6 + 60 * part.to_numpy(dtype=float) / max(peak, 1.0)
        ax.scatter(x, y, s=sizes, c=color, marker="s", alpha=0.8, label=action, linewidths=0)
    if rows.empty:
        ax.text(
            0.5,
            0.5,
            "no prune or regrow events",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#666666",
        )
        if not events.empty:
            ax.set_xlim(events["surgery_step"].min() - 0.5, events["surgery_step"].max() + 0.5)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.set_ylim(-0.6, max(len(layers), 1) - 0.4)
    ax.set(xlabel="surgery step", title=title)
    ax.legend(fontsize=7, loc="upper right")
    return fig


_MAX_LABELS = 8


def _limits_from_points(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    """Axis limits around the points, so wide error bars (few seeds) cannot squash them;
    extra room on the right for the labels."""
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return
    for values, setter, right in ((x[finite], ax.set_xlim, 0.3), (y[finite], ax.set_ylim, 0.15)):
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
        setter(lo - 0.15 * span, hi + right * span)


def pareto_front(accuracy: np.ndarray, flops: np.ndarray) -> np.ndarray:
    """Indices of the Pareto-optimal points (no other point has ≥ accuracy and ≤ FLOPs with
    one strictly better), sorted by FLOPs. NaN points are never on the front."""
    acc = np.asarray(accuracy, dtype=float)
    fl = np.asarray(flops, dtype=float)
    front = []
    for i in range(acc.size):
        if not (np.isfinite(acc[i]) and np.isfinite(fl[i])):
            continue
        dominated = (acc >= acc[i]) & (fl <= fl[i]) & ((acc > acc[i]) | (fl < fl[i]))
        if not dominated.any():
            front.append(i)
    return np.array(sorted(front, key=lambda i: (fl[i], -acc[i])), dtype=int)


def accuracy_flops_pareto(
    table: pd.DataFrame,
    accuracy: str = "online_accuracy",
    flops: str = "flops",
    title: str = "Accuracy vs FLOPs",
) -> Figure:
    """Accuracy against FLOPs, one point per row, with the Pareto frontier as a step line.

    Args:
        table: One row per run or group, e.g. :func:`esper.analysis.compare.compare_runs`
            output (its ``<metric>_ci`` columns become error bars when present); the index
            labels the points.
        accuracy: Accuracy column.
        flops: FLOPs column (fraction of dense forward FLOPs).
        title: Axes title.

    Returns:
        A figure whose first collection holds the points and whose line ``"pareto front"``
        joins the frontier.
    """
    fig = _figure(width=6.4, height=4.4)
    ax = fig.add_subplot()
    acc = table[accuracy].to_numpy(dtype=float)
    fl = table[flops].to_numpy(dtype=float)
    ax.scatter(fl, acc, s=36, c="#2ca02c", zorder=3, label="runs")
    xerr = table[f"{flops}_ci"].to_numpy(dtype=float) if f"{flops}_ci" in table else None
    yerr = table[f"{accuracy}_ci"].to_numpy(dtype=float) if f"{accuracy}_ci" in table else None
    if xerr is not None or yerr is not None:
        ax.errorbar(fl, acc, xerr=xerr, yerr=yerr, fmt="none", ecolor="#999999", lw=0.8)
    front = pareto_front(acc, fl)
    on_front = set(front.tolist())
    crowded = len(table) > _MAX_LABELS  # then only the frontier is labelled
    for i, (x, y, label) in enumerate(zip(fl, acc, table.index, strict=True)):
        if np.isfinite(x) and np.isfinite(y) and (not crowded or i in on_front):
            ax.annotate(str(label), (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if front.size:
        ax.plot(
            fl[front],
            acc[front],
            color="#ff7f0e",
            lw=1.5,
            drawstyle="steps-post",
            label="pareto front",
        )
    _limits_from_points(ax, fl, acc)
    ax.set(xlabel="FLOPs (fraction of dense)", ylabel="online accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plasticity_curves(rows: list[dict], stream: str) -> Figure:
    """End-of-task accuracy by task on ``stream``, one line per condition (mean over seeds,
    shaded min–max): the loss-of-plasticity plot of Dohare et al. (Nature 2024).

    Args:
        rows: ``{"policy", "density", "stream", "seed", "task_end_accuracy": [per task]}``
            (the ``task_end`` list of a quality report).
        stream: The stream to plot.
    """
    fig = _figure(8.0, 4.0)
    ax = fig.add_subplot()
    groups: dict[tuple[str, float], list[list[float]]] = {}
    for r in rows:
        if r["stream"] == stream:
            groups.setdefault((r["policy"], r["density"]), []).append(r["task_end_accuracy"])
    for (policy, density), curves in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        arr = np.asarray(curves, dtype=float)
        tasks = np.arange(arr.shape[1])
        line = "-" if density == 1.0 else "--"
        ax.plot(tasks, arr.mean(axis=0), line, label=f"{policy} @ {density:g}", linewidth=1.4)
        ax.fill_between(tasks, arr.min(axis=0), arr.max(axis=0), alpha=0.12)
    ax.set_xlabel("task")
    ax.set_ylabel("accuracy over the last 10% of the task")
    ax.set_title(f"Plasticity on {stream}")
    ax.legend(fontsize=7, ncol=2)
    return fig


_PER_ROW = 3  # searched keys side by side


def fitness_by_value(
    stretches: pd.DataFrame,
    keys: Sequence[str],
    metric: str = "fitness",
    title: str = "Fitness by searched value",
) -> Figure:
    """A sweep's fitness against each searched value, one point per stretch, coloured by
    member: which reward weights and temperatures did well, as the members ran them.

    Args:
        stretches: :func:`esper.analysis.stretches.stretch_summary` rows (``trial``,
            ``hp/<key>``, ``metric``; ``run_id`` tells apart members of several sweeps).
        keys: The searched keys (``reward.beta``), one axes each.
        metric: The fitness column.
        title: Figure title.

    Returns:
        A figure with one axes per key, each holding one scatter collection per member.
    """
    columns = min(max(len(keys), 1), _PER_ROW)
    rows = max(1, -(-len(keys) // _PER_ROW))
    fig = _figure(width=3.4 * columns + 0.6, height=3.0 * rows + 0.4)
    members = ["run_id", "trial"] if "run_id" in stretches.columns else ["trial"]
    several = "run_id" in stretches.columns and stretches["run_id"].nunique() > 1
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, columns, i + 1)
        if not stretches.empty:
            for member, part in stretches.groupby(members, sort=True):
                names = member if isinstance(member, tuple) else (member,)
                label = "/".join(map(str, names)) if several else str(names[-1])
                ax.scatter(part[f"{HP_PREFIX}{key}"], part[metric], s=28, alpha=0.85, label=label)
        ax.set(xlabel=key, ylabel=metric.replace("_", " ") if i % columns == 0 else None)
        ax.grid(alpha=0.3)
    if fig.axes and fig.axes[0].collections and len(fig.axes[0].collections) <= 12:
        fig.axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig
