"""A sweep's stretches: what each population member actually ran, between perturbations.

Under PBT a member's reward weights and temperatures change as it goes: at a perturbation it
may copy a better member's state (exploit) and move its searched values (explore). The
``run.json`` of a sweep keeps the composed base config, which no member ran, so a sweep is
compared by what its members ran instead. Every learner iteration of a member is one row of its
learning curve (:mod:`esper.events.learning`) carrying ``hp/<key>``, the value of each searched
key it ran that iteration with. A **stretch** is a maximal run of consecutive iterations of one
member with the same searched values; :func:`compare_sweep` groups the iterations by what their
stretch ran (``reward``: the whole reward weights, values not searched taken from the run's
config; a searched key such as ``reward.beta`` or ``policy.params.heat_tau``; or ``member``)
and gives each group its mean and Student-t 95% interval (:func:`esper.analysis.compare.mean_ci`)
over iterations. Iterations of one stretch are correlated (a smoothed fitness most of all), so
read the intervals as optimistic: they are not intervals over independent seeds.

The fitness is the column the members were ranked by: the sweep's ``search.metric`` where the
curves record it, else ``fitness`` (online accuracy relative to a reference surgeon, smoothed),
else ``online_accuracy``; or the one asked for.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from esper.analysis.compare import METRIC_LABELS, CompareError, format_value, mean_ci
from esper.analysis.runs import Run, RunLike, load_runs
from esper.config import HP_PREFIX, lookup

__all__ = [
    "FITNESS",
    "LABEL_DIGITS",
    "MEMBER",
    "SWEEP_METRICS",
    "by_stretch",
    "compare_sweep",
    "fitness_metric",
    "metric_label",
    "searched_keys",
    "stretch_summary",
    "stretches",
]

FITNESS = "fitness"
"""The learning-curve column of PBT's fitness, where a sweep records it."""

MEMBER = "member"
"""``by`` value that groups a sweep's iterations by population member (Tune trial)."""

SWEEP_METRICS: tuple[str, ...] = (
    "online_accuracy",
    "relative_accuracy",
    "density",
    "mean_reward",
    "r_accuracy",
    "r_flops",
    "r_oscillation",
    "r_gsnr",
    "r_spike",
)
"""Learning-curve columns compared besides the fitness (those a sweep recorded).
``relative_accuracy`` is the fitness before smoothing: a stretch's mean of it owes nothing to
the iterations before the stretch, where a smoothed fitness carries them over."""

_SAME_AS = {"mean_reward": "reward", "r_flops": "flops", "r_oscillation": "oscillation"}
"""Learning-curve columns that are :data:`esper.analysis.compare.METRICS` under another name."""


def metric_label(metric: str, fitness: str | None = None) -> str:
    """A learning-curve column's name in tables (``fitness: online acc`` for the fitness)."""
    label = METRIC_LABELS.get(_SAME_AS.get(metric, metric), metric.replace("_", " "))
    return f"fitness: {label}" if metric == fitness and metric != FITNESS else label


LABEL_DIGITS = 3
"""Significant digits of a group's label; more where two values would otherwise read alike."""

_MAX_DIGITS = 17
_KEYS = ["run_id", "trial", "stretch"]


def searched_keys(curve: pd.DataFrame) -> list[str]:
    """The searched keys (``reward.beta``) whose values a learning curve records, in order."""
    return [str(c)[len(HP_PREFIX) :] for c in curve.columns if str(c).startswith(HP_PREFIX)]


def by_stretch(runs: Sequence[Run], by: str) -> bool:
    """Whether ``by`` groups these runs' stretches rather than their ``run.json``: some run is
    a sweep and ``by`` is :data:`MEMBER`, ``reward``, or a config key at or above a searched one
    (``reward.beta``, ``policy.params``; a leading ``config.`` is allowed)."""
    keys = {k for run in runs for k in searched_keys(run.learning_curve)}
    key = by.removeprefix("config.")
    above = any(k == key or k.startswith(f"{key}.") for k in keys)
    return bool(keys) and (by == MEMBER or key == "reward" or above)


def fitness_metric(runs: Sequence[Run], metric: str | None = None) -> str:
    """The learning-curve column compared as fitness: ``metric`` when given, else the first of
    the runs' ``search.metric`` (what their members were ranked by), :data:`FITNESS` and
    ``online_accuracy`` that every run records.

    Raises:
        CompareError: a run whose learning curves lack that column (the columns are named).
    """
    if metric is None:
        chosen = [lookup(run.config, "search.metric") for run in runs]
        candidates = [*(str(c) for c in chosen if c is not None), FITNESS, "online_accuracy"]
        metric = next(
            (c for c in candidates if all(c in r.learning_curve.columns for r in runs)),
            "online_accuracy",
        )
    for run in runs:
        if metric not in run.learning_curve.columns:
            columns = ", ".join(sorted(map(str, run.learning_curve.columns)))
            raise CompareError(
                f"{run.path}: its learning curves have no column {metric!r} (columns: {columns})"
            )
    return metric


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds."""
    return value.item() if hasattr(value, "item") else value


def stretches(curve: pd.DataFrame) -> pd.DataFrame:
    """A learning curve's rows by trial and iteration, with ``stretch`` numbering each member's
    stretches from 0: a new one starts where a searched value changes or an iteration is
    skipped."""
    columns = [f"{HP_PREFIX}{k}" for k in searched_keys(curve)]
    if curve.empty:
        return curve.assign(stretch=pd.Series(dtype="int64"))
    ordered = curve.sort_values(["trial", "iteration"], kind="stable", ignore_index=True)
    numbers: list[int] = []
    previous: tuple[Any, int, tuple[Any, ...]] | None = None
    number = 0
    for trial, iteration, *values in ordered[["trial", "iteration", *columns]].itertuples(
        index=False
    ):
        ran = tuple(None if _missing(v) else v for v in values)
        if previous is None or trial != previous[0]:
            number = 0
        elif int(iteration) != previous[1] + 1 or ran != previous[2]:
            number += 1
        numbers.append(number)
        previous = (trial, int(iteration), ran)
    return ordered.assign(stretch=numbers)


def _sweep_rows(runs: Sequence[Run], metric: str | None) -> tuple[pd.DataFrame, str, list[str]]:
    """Every run's learning-curve rows with ``run``, ``run_id`` and ``stretch``; the fitness
    column (:func:`fitness_metric`); the measured columns (the fitness, then
    :data:`SWEEP_METRICS` recorded), as floats."""
    for run in runs:
        if not searched_keys(run.learning_curve):
            raise CompareError(
                f"{run.path} is not a sweep: its learning curves record no searched values "
                f"({HP_PREFIX}<key>); compare sweeps and other runs separately"
            )
    metric = fitness_metric(runs, metric)
    frames = [
        stretches(run.learning_curve).assign(run=index, run_id=run.run_id)
        for index, run in enumerate(runs)
    ]
    rows = pd.concat(frames, ignore_index=True)
    measured = [m for m in dict.fromkeys([metric, *SWEEP_METRICS]) if m in rows.columns]
    return rows.astype({m: float for m in measured}), metric, measured


def _ran_config(run: Run, values: dict[str, Any]) -> dict[str, Any]:
    """The run's config with a stretch's searched values in place."""
    config = copy.deepcopy(run.config)
    if "reward" not in config and isinstance(run.meta.get("reward"), dict):
        config["reward"] = dict(run.meta["reward"])  # runs that kept the weights at the top
    for key, value in values.items():
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config


def _constant(values: pd.Series) -> Any:
    """The one value of a series, NaN where it varies or is missing."""
    distinct = values.dropna().unique()
    return distinct[0] if len(distinct) == 1 and values.notna().all() else math.nan


def stretch_summary(run_dirs: Sequence[RunLike], metric: str | None = None) -> pd.DataFrame:
    """One row per stretch of the sweeps' members.

    Returns:
        ``run_id``, ``trial``, ``stretch``, ``first_iteration``, ``last_iteration``,
        ``iterations``, ``hp/<key>`` (the values it ran), then the mean over its iterations of
        the fitness and of each of :data:`SWEEP_METRICS` recorded; ``attrs["fitness"]`` names
        the fitness column.

    Raises:
        CompareError: a run that is not a sweep, or a fitness column that some run lacks.
    """
    runs = load_runs(run_dirs)
    rows, metric, measured = _sweep_rows(runs, metric)
    hp = [c for c in rows.columns if str(c).startswith(HP_PREFIX)]
    grouped = rows.groupby(["run", *_KEYS], sort=False)
    out = grouped.agg(
        first_iteration=("iteration", "min"),
        last_iteration=("iteration", "max"),
        iterations=("iteration", "size"),
        **{c: (c, _constant) for c in hp},
        **{m: (m, "mean") for m in measured},
    )
    out = out.reset_index().drop(columns="run")
    out.attrs["fitness"] = metric
    return out


def _labels(values: dict[str, Any]) -> dict[str, str]:
    """Each group's label: :data:`LABEL_DIGITS` significant digits, more where two groups'
    values would otherwise read alike."""
    labels: dict[str, str] = {}
    for digits in range(LABEL_DIGITS, _MAX_DIGITS + 1):
        labels = {k: format_value(v, digits) for k, v in values.items()}
        if len(set(labels.values())) == len(labels):
            break
    return labels


def compare_sweep(
    run_dirs: Sequence[RunLike], by: str = "reward", metric: str | None = None
) -> pd.DataFrame:
    """Compare what a sweep's members ran: their iterations grouped by their stretch's values.

    Args:
        run_dirs: Sweep run directories (or loaded runs); several sweeps are pooled.
        by: ``reward`` (the weights each stretch ran: one group per shaping), a config key
            (``reward.beta``, ``policy.params.heat_tau``; a leading ``config.`` is allowed), or
            :data:`MEMBER` (labelled ``trial``, or ``run_id/trial`` with several runs).
        metric: The fitness column (:func:`fitness_metric` chooses when ``None``).

    Returns:
        One row per group in order of first appearance, indexed by its label (index name
        ``by``): ``members``, ``stretches``, ``iterations``, then ``<metric>``, ``<metric>_ci``
        (95% half-width over iterations, NaN with fewer than two) and ``<metric>_n`` for the
        fitness first and each of :data:`SWEEP_METRICS` recorded, then ``hp/<key>`` (the value
        when every iteration of the group ran the same, else NaN). ``attrs["fitness"]`` names
        the fitness column.

    Raises:
        CompareError: no runs, a run that is not a sweep, a fitness column that some run lacks,
            or a key that some stretch's config lacks.
    """
    if not run_dirs:
        raise CompareError("no runs to compare")
    runs = load_runs(run_dirs)
    rows, metric, measured = _sweep_rows(runs, metric)
    hp = [c for c in rows.columns if str(c).startswith(HP_PREFIX)]
    group = pd.Series("", index=rows.index, dtype=object)
    values: dict[str, Any] = {}
    key = by.removeprefix("config.")
    for (index, run_id, trial, _), stretch in rows.groupby(["run", *_KEYS], sort=False):
        if by == MEMBER:
            value: Any = f"{run_id}/{trial}" if len(runs) > 1 else str(trial)
        else:
            ran = {c[len(HP_PREFIX) :]: _plain(stretch[c].iloc[0]) for c in hp}
            run = runs[int(index)]
            value = lookup(_ran_config(run, {k: v for k, v in ran.items() if not _missing(v)}), key)
            if value is None:
                searched = ", ".join(searched_keys(run.learning_curve))
                raise CompareError(
                    f"{run.path}: no config key {by!r} to group by (use {MEMBER}, reward, or "
                    f"a searched key: {searched})"
                )
        identity = json.dumps(value, sort_keys=True, default=str)
        values.setdefault(identity, value)
        group.loc[stretch.index] = identity
    rows = rows.assign(group=group)
    labels = _labels(values) if by != MEMBER else {k: str(v) for k, v in values.items()}
    table = []
    for identity in values:
        part = rows[rows["group"] == identity]
        row: dict[str, Any] = {
            "members": part.groupby(["run", "trial"]).ngroups,
            "stretches": part.groupby(["run", *_KEYS]).ngroups,
            "iterations": len(part),
        }
        for m in measured:
            row[m], row[f"{m}_ci"], row[f"{m}_n"] = mean_ci(part[m])
        row.update({c: _constant(part[c]) for c in hp})
        table.append(row)
    out = pd.DataFrame(table, index=pd.Index([labels[k] for k in values], name=by))
    out.attrs["fitness"] = metric
    return out
