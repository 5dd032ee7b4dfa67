"""Selection on the validation seeds of ``esper bench quality``: checkpoints and allocations.

Every choice the benchmark makes is made here, on ``preset.validation_seeds`` only, by mean
online accuracy, so the evaluation seeds stay unseen until the table:

* :func:`select_checkpoints`: each training run's checkpoint of each Emrakul variant (an RL
  one, never the imitation warm start, which is kept apart as the ``imitation_only``
  condition; a sweep's candidates, several members' at the same surgeries, have none);
* :func:`submit_allocation_runs` and :func:`choose_allocations`: each sparse baseline's layer
  allocation at each density (the runs start while Emrakul trains).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
from rich.console import Console

from esper.bench.quality_evaluation import evaluate_run
from esper.bench.quality_suite import SWITCHES, Condition, QualityPreset, conditions
from esper.bench.quality_training import TrainedVariant
from esper.bench.tasks import gather, remote

__all__ = [
    "CheckpointChoice",
    "choose_allocations",
    "chosen_key",
    "select_checkpoints",
    "submit_allocation_runs",
]


@dataclass(frozen=True)
class CheckpointChoice:
    """A checkpoint chosen on the validation seeds."""

    surgeries: int
    path: str
    validation: float


def chosen_key(run: int, variant: str) -> str:
    """The name of a chosen checkpoint in the report: run 0's by variant, the others' with
    ``_run<r>``."""
    return variant if run == 0 else f"{variant}_run{run}"


def select_checkpoints(
    preset: QualityPreset,
    trained: Mapping[tuple[int, str], TrainedVariant],
    console: Console,
) -> tuple[dict[tuple[int, str], CheckpointChoice], list[dict[str, Any]]]:
    """Each run's checkpoint of each variant, chosen on the validation seeds (an RL one: never
    the imitation snapshot, which is ``(run, "imitation_only")``); and the table of every
    candidate's validation score (``path`` names the candidate: a sweep's members can share
    ``surgeries``)."""
    evaluate = remote(evaluate_run)
    refs, keys = [], []
    for (run, variant), t in trained.items():
        for (i, (_, path)), stream, seed in product(
            enumerate(t.snapshots), preset.streams, preset.validation_seeds
        ):
            refs.append(evaluate.remote(stream, "emrakul", preset.densities[0], seed, path,
                                        SWITCHES.get(variant, ())))  # fmt: skip
            keys.append((run, variant, i, stream.name, seed))
    results = gather(refs, keys, "checkpoint selection (validation seeds)", console)
    table: list[dict[str, Any]] = []
    chosen: dict[tuple[int, str], CheckpointChoice] = {}
    for (run, variant), t in trained.items():
        best = None
        for i, (surgeries, path) in enumerate(t.snapshots):
            scores = [v["metrics"]["online_accuracy"] for k, v in results.items()
                      if k[:3] == (run, variant, i)]  # fmt: skip
            choice = CheckpointChoice(surgeries, path, float(np.mean(scores)))
            table.append({"run": run, "variant": variant, "surgeries": surgeries,
                          "path": path, "validation": choice.validation})  # fmt: skip
            if surgeries > 0 and (best is None or choice.validation > best.validation):
                best = choice
            if surgeries == 0 and variant == "emrakul":
                chosen[(run, "imitation_only")] = choice
        assert best is not None, f"run {run}'s {variant} saved no checkpoint after RL"
        chosen[(run, variant)] = best
        console.print(f"run {run} {variant}: checkpoint after {best.surgeries} surgeries "
                      f"(validation {best.validation:.3f})")  # fmt: skip
    return chosen, table


def _baselines(preset: QualityPreset) -> list[Condition]:
    """The sparse baseline conditions, one per allocation the preset tries."""
    return [c for c in conditions(preset) if c.allocation is not None]


def submit_allocation_runs(preset: QualityPreset) -> tuple[list[Any], list[Any]]:
    """Start the validation runs of every allocation candidate; returns their refs and keys."""
    evaluate = remote(evaluate_run)
    streams = {s.name: s for s in preset.streams}
    refs, keys = [], []
    candidates = _baselines(preset) if len(preset.allocations) > 1 else []
    for cond, seed in product(candidates, preset.validation_seeds):
        for name in cond.streams:
            refs.append(evaluate.remote(streams[name], cond.policy, cond.density, seed, None,
                                        cond.switches, cond.horizon, cond.allocation))  # fmt: skip
            keys.append((cond.label, cond.density, cond.allocation, name, seed))
    return refs, keys


def choose_allocations(
    preset: QualityPreset, results: Mapping[Any, dict[str, Any]], console: Console
) -> list[dict[str, Any]]:
    """Per (baseline, density), each allocation's mean online accuracy on the validation seeds
    and the best (the first of ``preset.allocations`` on a tie); a preset with one allocation
    has nothing to choose (``validation`` empty)."""
    tried = preset.allocations if len(preset.allocations) > 1 else ()
    rows: list[dict[str, Any]] = []
    for label, density in dict.fromkeys((c.label, c.density) for c in _baselines(preset)):
        validation = {
            allocation: float(np.mean([v["metrics"]["online_accuracy"] for k, v in results.items()
                                       if k[:3] == (label, density, allocation)]))
            for allocation in tried
        }  # fmt: skip
        best = max(validation, key=validation.__getitem__) if tried else preset.allocations[0]
        rows.append({"policy": label, "density": density, "validation": validation,
                     "chosen": best})  # fmt: skip
    if len(preset.allocations) > 1:
        picks = (f"{r['policy']} at {r['density']:g}: {r['chosen']}" for r in rows)
        console.print("allocations (validation seeds): " + ", ".join(picks))
    return rows
