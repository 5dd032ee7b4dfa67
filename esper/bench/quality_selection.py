"""Selection on the validation seeds of ``esper bench quality``: checkpoints, allocations and
options.

Every choice the benchmark makes is made here, on ``preset.validation_seeds`` only, by mean
online accuracy, so the evaluation seeds stay unseen until the table:

* :func:`select_checkpoints`: each training run's checkpoint of each Emrakul variant (an RL
  one, never the imitation warm start, surgeries 0, which is kept apart as the
  ``imitation_only`` condition; a sweep's candidates, several members' at the same surgeries,
  are told apart by their paths), and
  :func:`training_section`, the report's record of it;
* :func:`submit_candidate_runs` and :func:`choose_candidates`: each sparse baseline's layer
  allocation and each anchor's allocation and options (a point of its grid,
  :mod:`esper.bench.quality_anchors`) at each density, jointly (the runs start while Emrakul
  trains).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from esper.bench.quality_evaluation import evaluate_run
from esper.bench.quality_suite import SWITCHES, Condition, QualityPreset, conditions
from esper.bench.quality_training import TrainedVariant
from esper.bench.tasks import gather, remote

__all__ = [
    "CheckpointChoice",
    "Choices",
    "choose_candidates",
    "chosen_key",
    "select_checkpoints",
    "submit_candidate_runs",
    "training_section",
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


def training_section(
    preset: QualityPreset,
    out_dir: Path,
    trained: Mapping[tuple[int, str], TrainedVariant],
    chosen: Mapping[tuple[int, str], CheckpointChoice],
    selection: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The ``training`` section of the report: per run its seeds and directory and, per
    variant, the validation learning curve of its candidates (``imitation`` marks the warm
    start's snapshot, surgeries 0; a sweep's name their member: ``trial_id``, ``iteration``,
    ``searched`` …), the chosen checkpoint, the surgeries trained and the hyperparameters (a
    sweep's: its ``run_dir``, ``best_member`` and every member's final values)."""
    section = []
    for run, seed in enumerate(preset.train_seeds):
        variants = {}
        for (r, variant), t in trained.items():
            if r != run:
                continue
            curve = [
                {
                    "surgeries": row["surgeries"],
                    "validation": row["validation"],
                    "imitation": row["surgeries"] == 0,
                    **t.sources.get(row["path"], {}),
                }
                for row in selection
                if (row["run"], row["variant"]) == (run, variant)
            ]
            best = chosen[(run, variant)]
            variants[variant] = {
                "directory": t.directory,
                "curve": curve,
                "imitation_validation": next(
                    (c["validation"] for c in curve if c["imitation"]), None
                ),
                "chosen": {
                    "surgeries": best.surgeries,
                    "path": best.path,
                    "validation": best.validation,
                    **t.sources.get(best.path, {}),
                },
                "surgeries_trained": t.surgeries,
                "hyperparameters": t.hyperparameters,
            }
        section.append({
            "run": run, "seed": seed, "organism_seeds": list(preset.organism_seeds(run)),
            "directory": str(out_dir / f"run{run}"), "variants": variants,
        })  # fmt: skip
    return section


Key = tuple[str, float]
"""A row of the table: ``(label, density)``."""


@dataclass(frozen=True)
class Choices:
    """What the validation seeds chose among each row's candidate conditions.

    Attributes:
        chosen: Per row with candidates, the condition the evaluation seeds run.
        allocation: The report's ``allocation`` rows: per sparse baseline or anchor and
            density, ``validation`` (each allocation's mean online accuracy, an anchor's at
            its best options; empty with one allocation) and the ``chosen`` allocation.
        options: The report's ``options`` rows: per anchor and density, its ``surgeon``, its
            fixed ``overrides``, ``validation`` (every candidate's ``allocation``,
            ``options`` and mean ``online_accuracy``; empty with one candidate) and the
            ``chosen`` options.
    """

    chosen: dict[Key, Condition]
    allocation: list[dict[str, Any]]
    options: list[dict[str, Any]]

    def evaluates(self, condition: Condition) -> bool:
        """Whether the evaluation seeds run ``condition`` (a row without candidates, or the
        chosen one)."""
        return self.chosen.get((condition.label, condition.density), condition) == condition


def _candidates(preset: QualityPreset) -> dict[Key, list[Condition]]:
    """The rows with a choice and their candidates, in :func:`conditions`' order: a sparse
    baseline once per allocation, an anchor once per allocation and option set."""
    rows: dict[Key, list[Condition]] = {}
    for c in conditions(preset):
        if c.allocation is not None or c.config_overrides:
            rows.setdefault((c.label, c.density), []).append(c)
    return rows


def submit_candidate_runs(preset: QualityPreset) -> tuple[list[Any], list[Any]]:
    """Start the validation runs of every row with more than one candidate; returns their refs
    and keys ``(label, density, candidate index, stream, seed)``."""
    evaluate = remote(evaluate_run)
    streams = {s.name: s for s in preset.streams}
    refs, keys = [], []
    for (label, density), group in _candidates(preset).items():
        if len(group) < 2:
            continue
        for (i, cond), seed in product(enumerate(group), preset.validation_seeds):
            for name in cond.streams:
                refs.append(evaluate.remote(streams[name], cond.policy, density, seed, None,
                                            cond.switches, cond.horizon, cond.allocation,
                                            cond.config_overrides))  # fmt: skip
                keys.append((label, density, i, name, seed))
    return refs, keys


def choose_candidates(
    preset: QualityPreset, results: Mapping[Any, dict[str, Any]], console: Console
) -> Choices:
    """Per row, each candidate's mean online accuracy on the validation seeds and the best (the
    first in :func:`conditions`' order on a tie: the first of ``preset.allocations``, then of
    the grid); a row with one candidate has nothing to choose."""
    chosen: dict[Key, Condition] = {}
    allocation: list[dict[str, Any]] = []
    options: list[dict[str, Any]] = []
    for key, group in _candidates(preset).items():
        scores = [
            float(np.mean([v["metrics"]["online_accuracy"] for k, v in results.items()
                           if k[:3] == (*key, i)]))
            for i in range(len(group))
        ] if len(group) > 1 else [float("nan")]  # fmt: skip
        best = chosen[key] = group[int(np.argmax(scores))]
        tried = list(zip(group, scores, strict=True)) if len(group) > 1 else []
        row: dict[str, Any] = {"policy": key[0], "density": key[1]}
        if best.allocation is not None:
            by_allocation = (
                {a: max(s for c, s in tried if c.allocation == a) for a in preset.allocations}
                if len(preset.allocations) > 1
                else {}
            )
            allocation.append({**row, "validation": by_allocation, "chosen": best.allocation})
        if best.config_overrides:
            options.append({
                **row, "surgeon": best.policy, "overrides": list(best.overrides),
                "validation": [{"allocation": c.allocation, "options": list(c.options),
                                "online_accuracy": s} for c, s in tried],
                "chosen": list(best.options),
            })  # fmt: skip
    if len(preset.allocations) > 1:
        picks = (f"{r['policy']} at {r['density']:g}: {r['chosen']}" for r in allocation)
        console.print("allocations (validation seeds): " + ", ".join(picks))
    if picked := [r for r in options if r["validation"]]:
        picks = (f"{r['policy']} at {r['density']:g}: {' '.join(r['chosen'])}" for r in picked)
        console.print("options (validation seeds): " + ", ".join(picks))
    return Choices(chosen, allocation, options)
