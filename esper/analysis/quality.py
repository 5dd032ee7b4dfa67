"""Quality metrics of a surgeon on a drifting stream, and the suite summary with intervals.

One run (a policy at a density on one stream and seed) is scored from its per-step online
accuracies, as a prequential evaluation scores it (Gama et al. 2013): every batch is predicted
before it is trained on.

* ``online_accuracy``: mean over every step of the stream.
* ``task_end_accuracy``: accuracy over the last 10% of each task, averaged over tasks (what
  the network reached before the next drift).
* ``recovery_steps``: steps after each drift until the running accuracy is back to 90% of the
  previous task's end level (:func:`esper.measures.recovery_steps`); a task that never gets
  there counts its whole length (censored), so a surgeon cannot look fast by never recovering.
* ``plasticity``: end-of-task accuracy over the last fifth of the tasks minus the first fifth.
  Loss of plasticity (Dohare et al., Nature 2024) makes it negative on a long permuted stream.
* ``final_density``, ``flops`` (sparse ÷ dense forward FLOPs) and ``reversal_rate`` (the fraction of
  mask changes undone within the flip-flop window) at or over the run.

:func:`summarize` turns many runs into the table of ``esper bench quality``: per condition the
mean over seeds with a BCa bootstrap interval (:mod:`esper.analysis.intervals`), the
suite-average over streams, and paired differences (same stream, same seed) of one policy
against every other. :func:`between_runs` adds how independent training runs of the same
policy differ, and what RL adds over each run's own imitation warm start;
:mod:`esper.analysis.quality_tables` renders both as markdown. Torch-free, like the rest of
:mod:`esper.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from esper.analysis.intervals import Interval, bootstrap_interval, paired_interval
from esper.measures import recovery_steps

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "SUITE",
    "RunScore",
    "between_runs",
    "paired_differences",
    "plasticity_summary",
    "run_metrics",
    "summarize",
    "task_end_accuracies",
]

METRICS = (
    "online_accuracy",
    "task_end_accuracy",
    "recovery_steps",
    "plasticity",
    "final_density",
    "flops",
    "reversal_rate",
)
"""Every metric of a run, in table order."""

HIGHER_IS_BETTER = {
    "online_accuracy": True,
    "task_end_accuracy": True,
    "recovery_steps": False,
    "plasticity": True,
    "final_density": False,
    "flops": False,
    "reversal_rate": False,
}
"""Direction of each metric (how a paired difference reads)."""

RECOVERY_FRACTION = 0.9
"""A task has recovered when its running accuracy reaches this fraction of the previous task's
end level."""

TASK_END_FRACTION = 0.1
"""The end of a task: its last 10% of steps."""


def _tasks(accuracy: np.ndarray, task_length: int) -> list[np.ndarray]:
    return [accuracy[i : i + task_length] for i in range(0, accuracy.size, task_length)]


def task_end_accuracies(accuracy: Sequence[float] | np.ndarray, task_length: int) -> np.ndarray:
    """Mean accuracy over the last :data:`TASK_END_FRACTION` of each task, in task order."""
    if task_length < 1:
        raise ValueError(f"task_length must be ≥ 1, got {task_length}")
    acc = np.asarray(accuracy, dtype=float)
    ends = []
    for task in _tasks(acc, task_length):
        tail = max(1, math.ceil(TASK_END_FRACTION * task.size))
        ends.append(float(task[-tail:].mean()))
    return np.asarray(ends)


def run_metrics(
    accuracy: Sequence[float] | np.ndarray,
    task_length: int,
    density: float,
    flops: float,
    reversal_rate: float,
    recovery_window: int = 10,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one run.

    Args:
        accuracy: Online accuracy of each SGD step of the stream, in order.
        task_length: Steps per task (tasks start at multiples of it).
        density: Final global density.
        flops: Sparse ÷ dense forward FLOPs, averaged over the run's SGD steps (the final
            ratio under a fixed budget; results recorded before the elastic budget, 2026-12-06,
            hold the final ratio, which differs only for GMP's dense start).
        reversal_rate: Mean mask reversal rate over surgeries (0 for policies that never
            change a mask).
        recovery_window: Steps averaged by the recovery rule.

    Raises:
        ValueError: no steps, or ``task_length < 1``.
    """
    acc = np.asarray(accuracy, dtype=float)
    if acc.size == 0:
        raise ValueError("a run needs at least one step of accuracy")
    ends = task_end_accuracies(acc, task_length)
    tasks = _tasks(acc, task_length)
    recoveries = []
    for previous_end, task in zip(ends[:-1], tasks[1:], strict=True):
        steps = recovery_steps(task, RECOVERY_FRACTION * previous_end, recovery_window)
        recoveries.append(task.size if steps is None else steps)
    fifth = max(1, len(ends) // 5)
    plasticity = float(ends[-fifth:].mean() - ends[:fifth].mean()) if len(ends) > 1 else math.nan
    return {
        "online_accuracy": float(acc.mean()),
        "task_end_accuracy": float(ends.mean()),
        "recovery_steps": float(np.mean(recoveries)) if recoveries else math.nan,
        "plasticity": plasticity,
        "final_density": float(density),
        "flops": float(flops),
        "reversal_rate": float(reversal_rate),
    }


@dataclass(frozen=True)
class RunScore:
    """The metrics of one run and the condition it belongs to.

    Attributes:
        policy: Policy (or ablation) name.
        density: Density budget of the condition (1.0 for dense).
        stream: Stream name of the suite.
        seed: Evaluation seed.
        metrics: :func:`run_metrics` output.
    """

    policy: str
    density: float
    stream: str
    seed: int
    metrics: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        """The score as JSON-ready data (NaN as ``None``)."""
        clean = {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()}
        return {"policy": self.policy, "density": self.density, "stream": self.stream,
                "seed": self.seed, "metrics": clean}  # fmt: skip


SUITE = "suite"
"""Stream name of the suite average."""


def _interval_json(interval: Interval) -> dict[str, object]:
    data = interval.to_json()
    return {"mean": data["mean"], "ci": data["ci"], "n": data["n"]}


def _conditions(scores: Iterable[RunScore]) -> dict[tuple[str, float], list[RunScore]]:
    groups: dict[tuple[str, float], list[RunScore]] = {}
    for s in scores:
        groups.setdefault((s.policy, s.density), []).append(s)
    return groups


def _suite_means(runs: list[RunScore], metric: str) -> list[float]:
    """Per seed, the metric averaged over the streams that seed ran."""
    by_seed: dict[int, list[float]] = {}
    for r in runs:
        by_seed.setdefault(r.seed, []).append(r.metrics[metric])
    return [float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
            for _, v in sorted(by_seed.items())]  # fmt: skip


def paired_differences(
    scores: Sequence[RunScore],
    policy: str,
    baseline: str,
    density: float,
    baseline_density: float,
    metric: str,
    stream: str = SUITE,
) -> Interval:
    """Interval of the mean difference ``policy − baseline`` over shared (stream, seed) units.

    ``stream`` restricts the units to one stream; :data:`SUITE` pools every stream (each
    (stream, seed) pair is one unit). Units that only one side ran are dropped.
    """

    def units(name: str, d: float) -> dict[tuple[str, int], float]:
        return {(s.stream, s.seed): s.metrics[metric] for s in scores
                if s.policy == name and s.density == d and stream in (SUITE, s.stream)}  # fmt: skip

    a, b = units(policy, density), units(baseline, baseline_density)
    shared = sorted(set(a) & set(b))
    return paired_interval([a[k] for k in shared], [b[k] for k in shared])


def summarize(
    scores: Sequence[RunScore],
    focus: str,
    paired_metrics: Sequence[str] = (
        "online_accuracy",
        "task_end_accuracy",
        "recovery_steps",
        "plasticity",
    ),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``results`` and ``paired`` lists of a quality report.

    Args:
        scores: Every run.
        focus: The policy compared against the others (``emrakul``): at each of its densities
            against every other policy at the same density and against every dense (density
            1) condition.
        paired_metrics: Metrics of the paired differences.

    Returns:
        ``results``: one entry per (policy, density, stream), plus ``stream = "suite"`` (per
        seed the mean over streams, interval over seeds), each metric as ``{"mean", "ci",
        "n"}``. ``paired``: one entry per (vs, density, metric, stream), ``mean_diff`` and
        ``ci`` of ``focus − vs``; ``stream = "suite"`` pools every (stream, seed) unit.
    """
    groups = _conditions(scores)
    results: list[dict[str, Any]] = []
    for (policy, density), runs in sorted(groups.items()):
        streams = sorted({r.stream for r in runs})
        for stream in [*streams, SUITE]:
            entry: dict[str, Any] = {"policy": policy, "density": density, "stream": stream}
            if stream == SUITE:
                entry["streams"] = streams
            for metric in METRICS:
                if stream == SUITE:
                    values = _suite_means(runs, metric)
                else:
                    values = [r.metrics[metric] for r in runs if r.stream == stream]
                entry[metric] = _interval_json(bootstrap_interval(values))
            results.append(entry)
    paired: list[dict[str, Any]] = []
    for density in sorted({d for p, d in groups if p == focus}, reverse=True):
        for other, other_density in sorted(groups):
            if other == focus or other_density not in (density, 1.0):
                continue
            streams = sorted({s.stream for s in groups[(other, other_density)]})
            for metric in paired_metrics:
                for stream in [SUITE, *streams]:
                    diff = paired_differences(
                        scores, focus, other, density, other_density, metric, stream
                    )
                    paired.append({
                        "policy": focus, "vs": other, "density": density,
                        "vs_density": other_density, "stream": stream, "metric": metric,
                        **_paired_json(diff, metric),
                    })  # fmt: skip
    return results, paired


def _paired_json(diff: Interval, metric: str) -> dict[str, Any]:
    data = diff.to_json()
    return {"mean_diff": data["mean"], "ci": data["ci"], "n": data["n"],
            "better": _verdict(diff, HIGHER_IS_BETTER[metric])}  # fmt: skip


def between_runs(
    scores: Sequence[RunScore],
    runs: Sequence[tuple[str, str]],
    density: float,
    metric: str = "online_accuracy",
) -> dict[str, Any]:
    """How independent training runs of one policy differ, and what RL adds in each.

    Args:
        scores: Every run of the evaluation.
        runs: Per training run, the policy names of its trained policy and of its
            imitation-only snapshot (the behaviour-cloned warm start before any RL update).
        density: The density both were evaluated at.
        metric: The metric compared.

    Returns:
        ``{"metric", "density", "runs", "min", "max", "sd"}``: per run (``run`` is its index
        in ``runs``) its ``policy``, ``imitation``, ``suite_mean`` (the suite row's mean: per
        seed the mean over streams, then over seeds; ``None`` when it was not evaluated) and
        ``rl_over_imitation``, the paired difference trained − imitation-only of that run over
        shared (stream, seed) units (``{"mean_diff", "ci", "n", "better"}``, ``None`` without
        both). ``min``, ``max`` and ``sd`` (sample standard deviation, ``None`` below two runs)
        are over the runs' suite means.
    """
    groups = _conditions(scores)
    entries: list[dict[str, Any]] = []
    for run, (policy, imitation) in enumerate(runs):
        own = groups.get((policy, density), [])
        mean = float(np.nanmean(_suite_means(own, metric))) if own else None
        rl = None
        if own and (imitation, density) in groups:
            diff = paired_differences(scores, policy, imitation, density, density, metric)
            rl = _paired_json(diff, metric)
        entries.append({"run": run, "policy": policy, "imitation": imitation,
                        "suite_mean": mean, "rl_over_imitation": rl})  # fmt: skip
    means = [e["suite_mean"] for e in entries if e["suite_mean"] is not None]
    return {
        "metric": metric,
        "density": density,
        "runs": entries,
        "min": min(means) if means else None,
        "max": max(means) if means else None,
        "sd": float(np.std(means, ddof=1)) if len(means) > 1 else None,
    }


def _verdict(diff: Interval, higher_is_better: bool) -> str:
    """``better``/``worse`` when the interval excludes zero, else ``unresolved``."""
    if not diff.excludes(0.0):
        return "unresolved"
    return "better" if (diff.mean > 0) == higher_is_better else "worse"


def plasticity_summary(rows: Sequence[Mapping[str, Any]], stream: str) -> list[dict[str, Any]]:
    """Loss of plasticity per condition on ``stream``: end-of-task accuracy over the first and
    the last fifth of the tasks and its least-squares slope per task, each with an interval
    over seeds (Dohare et al. 2024 show dense backprop's slope turning negative on long
    permuted streams while continual backprop's stays flat).

    Args:
        rows: ``{"policy", "density", "stream", "seed", "task_end_accuracy": [per task]}``.
        stream: The stream summarized.
    """
    groups: dict[tuple[str, float], list[list[float]]] = {}
    for r in rows:
        if r["stream"] == stream:
            groups.setdefault((r["policy"], r["density"]), []).append(r["task_end_accuracy"])
    out = []
    for (policy, density), curves in sorted(groups.items()):
        arr = np.asarray(curves, dtype=float)
        fifth = max(1, arr.shape[1] // 5)
        tasks = np.arange(arr.shape[1], dtype=float)
        slopes = [float(np.polyfit(tasks, c, 1)[0]) if c.size > 1 else math.nan for c in arr]
        out.append({
            "policy": policy, "density": density, "stream": stream, "tasks": int(arr.shape[1]),
            "early": _interval_json(bootstrap_interval(arr[:, :fifth].mean(axis=1))),
            "late": _interval_json(bootstrap_interval(arr[:, -fifth:].mean(axis=1))),
            "slope_per_task": _interval_json(bootstrap_interval(slopes)),
        })  # fmt: skip
    return out
