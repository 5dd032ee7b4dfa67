"""One evaluation run of ``esper bench quality``: a surgeon on one stream and seed, scored.

:func:`evaluate_run` is the unit every later stage of the benchmark is made of: checkpoint and
allocation selection run it on the validation seeds, the table on the evaluation seeds. Each
run is prequential (every batch predicted before it is trained on) and scored by
:func:`esper.analysis.quality.run_metrics`. :func:`policy_overrides` and
:func:`compose_config` build the config of a run (training composes its organisms the same
way, so a trained policy meets the streams it will be scored on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from esper.analysis.breathing import breathing_correlation
from esper.analysis.quality import run_metrics, task_end_accuracies
from esper.bench.quality_suite import RIGL_HORIZON, Stream

__all__ = ["compose_config", "evaluate_run", "policy_overrides"]


def compose_config(overrides: Sequence[str]) -> Any:
    """The config the overrides compose (Hydra loads only when a config is needed)."""
    from esper.conf import compose

    return compose(list(overrides))


def policy_overrides(
    stream: Stream,
    policy: str,
    density: float,
    horizon: float = RIGL_HORIZON,
    allocation: str | None = None,
    overrides: Sequence[str] = (),
) -> list[str]:
    """The config overrides of ``policy`` at ``density`` on ``stream``: the stream's, then the
    policy's, RigL's ``t_end`` (``horizon`` of the stream), the layer ``allocation``
    (``None``: the workload's) and the condition's own ``overrides`` (an anchor's optimizer
    or host options, :attr:`~esper.bench.quality_condition.Condition.config_overrides`)."""
    extra = [f"policy={policy}", f"policy.density={density}"]
    if policy in ("rigl", "rigl_elastic"):  # RigL's mask stops at T_end = horizon × stream
        extra.append(f"policy.params.t_end={max(1, int(horizon * stream.steps))}")
    if allocation is not None:
        extra.append(f"workload.scalpel.distribution={allocation}")
    return [*stream.overrides, *extra, *overrides]


def evaluate_run(
    stream: Stream,
    policy: str,
    density: float,
    seed: int,
    checkpoint: str | None = None,
    switches: tuple[tuple[str, Any], ...] = (),
    horizon: float = RIGL_HORIZON,
    allocation: str | None = None,
    overrides: tuple[str, ...] = (),
    record_to: str | None = None,
) -> dict[str, Any]:
    """One prequential run of ``policy`` (or the checkpoint, with the ablation ``switches``
    set on it) on ``stream``, under the layer ``allocation`` (``None``: the workload's) and
    the condition's own config ``overrides`` (:func:`policy_overrides`): its
    metrics, its end-of-task accuracies and its breathing correlation
    (:func:`~esper.analysis.breathing.breathing_correlation`; NaN under a fixed budget). A host
    that diverges scores 0 on the steps it did not run. With ``record_to`` the run's events and
    metrics are also written there as a run directory (as ``esper evaluate`` writes one), for
    the detectors (:mod:`esper.bench.strategies`)."""
    from esper.policies.base import dense_start, make_policy
    from esper.policies.checkpoints import load_policy
    from esper.policies.evaluation import evaluate_policy
    from esper.threads import one_thread
    from esper.workloads.factory import build_organism

    composed = policy_overrides(stream, policy, density, horizon, allocation, overrides)
    cfg = compose_config([*composed, f"experiment.seed={seed}"])
    start, params = dense_start(cfg.policy.density, cfg.policy.name, cfg.policy.params)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, density=start))
    accuracies: list[float] = []
    losses: list[float] = []  # per interval: the reset's, then one per surgery
    densities: list[float] = []  # after each surgery

    def note(index: int, step: Any) -> None:
        accuracies.extend(step.info["accuracies"])
        losses.append(float(step.info["online_loss"]))
        if index >= 0:
            densities.append(float(step.info["density"]))

    with one_thread(), ExitStack() as stack:
        organism = build_organism(cfg)
        surgeon = load_policy(checkpoint) if checkpoint else make_policy(policy, **params)
        for attribute, value in switches:
            setattr(surgeon, attribute, value)
        surgeries = stream.steps // cfg.policy.surgery_interval - 1
        on_events = None
        if record_to is not None:
            from esper.platform.recorder import RunRecorder
            from esper.platform.runs import run_state

            stack.enter_context(run_state(Path(record_to)))  # marked once the tables flush
            recorder = stack.enter_context(
                RunRecorder(Path(record_to), cfg, "bench", stream.name, surgeon.name)
            )
            noted, on_events = note, recorder.events

            def note(index: int, step: Any) -> None:
                noted(index, step)
                recorder.step(organism, step)

        report = evaluate_policy(organism, surgeon, surgeries, on_step=note, on_events=on_events)
    task_length = int(cfg.workload.schedule.params["task_length"])
    acc = np.zeros(stream.steps)
    acc[: min(len(accuracies), stream.steps)] = accuracies[: stream.steps]
    reversal = 0.0 if np.isnan(report.oscillation) else report.oscillation
    metrics = run_metrics(acc, task_length, report.density, report.mean_flops, reversal)
    return {"metrics": metrics, "task_end": task_end_accuracies(acc, task_length).tolist(),
            "diverged": report.diverged,
            "breathing": breathing_correlation(losses, densities)}  # fmt: skip
