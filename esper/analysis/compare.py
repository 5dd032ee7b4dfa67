"""Compare runs: mean ± 95% confidence intervals over seeds and replicas, paired differences.

A *unit* is one replica of one trial of one run (``RUN/run.json`` gives the run's seed,
workload, policy and reward weights). Each unit is reduced to one number per metric
(:data:`METRICS`), and groups of runs (by a ``run.json`` key) get the mean and a Student-t 95%
interval over their units. With a single unit the interval is undefined: its half-width is NaN.

Runs are loaded with :func:`esper.analysis.runs.load_runs` (paths or loaded runs are accepted).
A sweep's members change their reward weights and temperatures as they go (PBT), so the
``run.json`` of a sweep names values no member ran: :mod:`esper.analysis.stretches` compares
what they ran instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from esper import measures
from esper.analysis.intervals import paired_interval
from esper.analysis.runs import Run, RunLike, load_runs

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "CompareError",
    "compare_runs",
    "format_value",
    "group_label",
    "mean_ci",
    "paired_run_differences",
    "recovery_steps",
    "unit_summary",
]

METRICS: tuple[str, ...] = (
    "online_accuracy",
    "recovery_steps",
    "density",
    "flops",
    "oscillation",
    "r_accuracy",
    "r_gsnr",
    "r_spike",
    "reward",
)
"""Per-unit metrics compared across groups (``flops`` is ``r_flops``, ``oscillation`` is
``r_oscillation``: the reward's FLOPs and oscillation components)."""

METRIC_LABELS: dict[str, str] = {
    "online_accuracy": "online acc",
    "recovery_steps": "recovery (surgeries)",
    "density": "density",
    "flops": "FLOPs (÷ dense)",
    "oscillation": "oscillation",
    "r_accuracy": "R acc",
    "r_gsnr": "R gsnr",
    "r_spike": "R spike",
    "reward": "reward",
}
"""Short human-readable names of :data:`METRICS`, for tables and plots."""

_UNIT_KEYS = ["run_id", "trial_id", "replica_id"]
_REWARD_SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε"}
_DIGITS = 6  # ``:g``'s significant digits


class CompareError(ValueError):
    """No runs to compare, a grouping key that some run lacks, or an unknown metric."""


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and Student-t confidence half-width of the finite values.

    Args:
        values: Samples (NaNs are dropped).
        confidence: Coverage of the interval.

    Returns:
        ``(mean, half_width, n)``: the interval is ``mean ± half_width``. ``half_width`` is NaN
        when ``n < 2`` (no spread to estimate), and ``mean`` is NaN when ``n == 0``.
    """
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, n
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem, n


def recovery_steps(metrics: pd.DataFrame) -> pd.DataFrame:
    """Recovery after each drift of one replica's accuracy series.

    A drift is a change of ``task_index`` between consecutive surgery steps. The pre-drift
    level is the online accuracy at the last surgery before the change; the recovery is the
    number of surgeries of the new task until online accuracy is back at or above that level
    (:func:`esper.measures.recovery_steps` with a window of one surgery, the rule the demo uses
    over SGD steps: a task whose first surgery is already back counts 1). It is NaN if that
    never happens before the next drift or the end of the series.

    Args:
        metrics: One replica's ``metrics`` rows (``surgery_step``, ``task_index``,
            ``online_accuracy``).

    Returns:
        One row per drift: ``surgery_step`` (of the change), ``task_from``, ``task_to``,
        ``pre_accuracy``, ``recovery_steps``.
    """
    columns = ["surgery_step", "task_from", "task_to", "pre_accuracy", "recovery_steps"]
    if metrics.empty:
        return pd.DataFrame(columns=columns)
    series = metrics.sort_values("surgery_step")
    steps = series["surgery_step"].to_numpy()
    tasks = series["task_index"].to_numpy()
    acc = series["online_accuracy"].to_numpy(dtype=float)
    changes = [i for i in range(1, len(tasks)) if tasks[i] != tasks[i - 1]]
    rows = []
    for k, i in enumerate(changes):
        end = changes[k + 1] if k + 1 < len(changes) else len(tasks)
        pre = acc[i - 1]
        recovered = measures.recovery_steps(acc[i:end], pre, window=1)
        rows.append(
            {
                "surgery_step": int(steps[i]),
                "task_from": int(tasks[i - 1]),
                "task_to": int(tasks[i]),
                "pre_accuracy": float(pre),
                "recovery_steps": math.nan if recovered is None else float(recovered),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def unit_summary(run: Run) -> pd.DataFrame:
    """Reduce a run to one row per unit (trial and replica) with every metric in :data:`METRICS`.

    ``recovery_steps`` is the mean over the unit's drifts that recovered (NaN if none did);
    the other metrics are means over the unit's surgery steps.

    Args:
        run: A loaded run.

    Returns:
        Columns ``run_id``, ``trial_id``, ``replica_id`` and :data:`METRICS`.
    """
    metrics = run.metrics
    if metrics.empty:
        return pd.DataFrame(columns=[*_UNIT_KEYS, *METRICS])
    rows = []
    for (trial, replica), unit in metrics.groupby(["trial_id", "replica_id"], sort=True):
        drifts = recovery_steps(unit)["recovery_steps"].dropna()
        rows.append(
            {
                "run_id": run.run_id,
                "trial_id": trial,
                "replica_id": int(replica),
                "online_accuracy": unit["online_accuracy"].mean(),
                "recovery_steps": drifts.mean() if len(drifts) else math.nan,
                "density": unit["density"].mean(),
                "flops": unit["r_flops"].mean(),
                "oscillation": unit["r_oscillation"].mean(),
                "r_accuracy": unit["r_accuracy"].mean(),
                "r_gsnr": unit["r_gsnr"].mean(),
                "r_spike": unit["r_spike"].mean(),
                "reward": unit["reward"].mean(),
            }
        )
    return pd.DataFrame(rows, columns=[*_UNIT_KEYS, *METRICS])


_MISSING = object()


def _lookup(meta: dict[str, Any], key: str) -> Any:
    """``meta[key]``, following dots into nested objects (``config.workload.name``)."""
    if key in meta:
        return meta[key]
    node: Any = meta
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _short(value: Any, digits: int = _DIGITS) -> str:
    return (
        f"{value:.{digits}g}"
        if isinstance(value, float | int) and not isinstance(value, bool)
        else (json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value))
    )


def _rounded(value: Any, digits: int) -> Any:
    """``value`` with every float rounded to ``digits`` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def format_value(value: Any, digits: int | None = None) -> str:
    """A group's label from its value: reward weights as ``α=1 β=0.1 γ=0.1 δ=0 ε=0.5``, other
    objects as compact JSON, numbers with ``digits`` significant digits (``None``: six, and
    floats inside objects as they are).
    """
    if isinstance(value, dict):
        if digits is not None:
            value = _rounded(value, digits)
        places = _DIGITS if digits is None else digits
        if value and set(value) & set(_REWARD_SYMBOLS):
            known = [
                f"{_REWARD_SYMBOLS[k]}={_short(value[k], places)}"
                for k in _REWARD_SYMBOLS
                if k in value
            ]
            other = [
                f"{k}={_short(v, places)}"
                for k, v in sorted(value.items())
                if k not in _REWARD_SYMBOLS
            ]
            return " ".join(known + other)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if digits is not None and isinstance(value, float | int) and not isinstance(value, bool):
        return _short(value, digits)
    return str(value)


def group_label(meta: dict[str, Any], by: str) -> str:
    """The label of a run in a grouping by ``by`` (a ``run.json`` key, dots for nested keys).

    Reward weights print as ``α=1 β=0.1 γ=0.1 δ=0 ε=0.5``; other objects as compact JSON.

    Raises:
        CompareError: the run has no such key.
    """
    value = _lookup(meta, by)
    if value is _MISSING:
        keys = ", ".join(sorted(meta))
        raise CompareError(f"run.json has no key {by!r} (keys: {keys}; use dots for nesting)")
    return format_value(value)


def compare_runs(run_dirs: Sequence[RunLike], by: str = "reward") -> pd.DataFrame:
    """Compare groups of runs: mean ± 95% t-interval over their seeds and replicas.

    Args:
        run_dirs: Run directories (or already loaded :class:`Run` objects).
        by: ``run.json`` key to group by: ``reward`` (the weights), ``policy``, ``workload``,
            ``seed``, ``run_id`` (one row per run), or any other key (dots for nesting).

    Returns:
        One row per group, indexed by the group label (index name ``by``): ``runs`` and
        ``units`` (trial replicas pooled), then ``<metric>`` (mean), ``<metric>_ci`` (95%
        half-width, NaN with fewer than two finite units) and ``<metric>_n`` for each metric in
        :data:`METRICS`. Groups keep the order in which they first appear.

    Raises:
        CompareError: no runs, or a key that some run lacks.
        esper.analysis.runs.RunError: a path that is not a run directory.
    """
    if not run_dirs:
        raise CompareError("no runs to compare")
    runs = load_runs(run_dirs)
    labels = [group_label(r.meta, by) for r in runs]
    units = []
    for run, label in zip(runs, labels, strict=True):
        summary = unit_summary(run)
        summary.insert(0, "group", label)
        units.append(summary)
    pooled = pd.concat(units, ignore_index=True)
    rows = []
    groups = list(dict.fromkeys(labels))
    for label in groups:
        part = pooled[pooled["group"] == label]
        row: dict[str, Any] = {"runs": labels.count(label), "units": len(part)}
        for metric in METRICS:
            mean, half, n = mean_ci(part[metric])
            row[metric], row[f"{metric}_ci"], row[f"{metric}_n"] = mean, half, n
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(groups, name=by))


def paired_run_differences(
    runs_a: Sequence[RunLike], runs_b: Sequence[RunLike], metric: str
) -> pd.DataFrame:
    """Per-pair differences ``a − b`` of a metric on matched (workload, seed, replica) units.

    Units of the same run side that share a key (several trials, or repeated runs) are
    averaged first; keys present on one side only are dropped.

    Args:
        runs_a: Runs of the first condition.
        runs_b: Runs of the second condition.
        metric: One of :data:`METRICS`.

    Returns:
        One row per matched pair: ``workload``, ``seed``, ``replica_id``, ``a``, ``b``,
        ``diff``. ``df.attrs`` holds ``mean``, ``ci`` (``[low, high]``) and ``n`` of the
        differences, and the whole ``interval``: the BCa bootstrap interval of a paired
        difference that the quality benchmark uses too
        (:func:`esper.analysis.intervals.paired_interval`, one definition for both).

    Raises:
        CompareError: an unknown metric.
        esper.analysis.runs.RunError: a path that is not a run directory.
    """
    if metric not in METRICS:
        raise CompareError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")
    keys = ["workload", "seed", "replica_id"]

    def side(runs: Sequence[RunLike]) -> pd.DataFrame:
        frames = []
        for run in load_runs(runs):
            summary = unit_summary(run)
            summary["workload"] = str(run.meta.get("workload"))
            summary["seed"] = run.meta.get("seed")
            frames.append(summary[[*keys, metric]])
        if not frames:
            return pd.DataFrame(columns=[*keys, metric])
        return pd.concat(frames, ignore_index=True).groupby(keys, as_index=False)[metric].mean()

    merged = side(runs_a).merge(side(runs_b), on=keys, suffixes=("_a", "_b"))
    out = merged.rename(columns={f"{metric}_a": "a", f"{metric}_b": "b"})
    out["diff"] = out["a"] - out["b"]
    out = out.sort_values(keys, ignore_index=True)
    interval = paired_interval(out["a"], out["b"])
    out.attrs["interval"] = interval
    out.attrs["mean"], out.attrs["ci"], out.attrs["n"] = (
        interval.mean,
        [interval.low, interval.high],
        interval.n,
    )
    out.attrs["metric"] = metric
    return out
