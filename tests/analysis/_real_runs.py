"""Real runs for the detectors' validation: tiny organisms, the real event writer, read back by
:func:`esper.analysis.runs.load_run`.

A registered baseline runs through ``esper evaluate``'s own code
(:func:`esper.commands.evaluate.evaluate_command`); a scripted surgeon through the same steps
(:class:`~esper.platform.recorder.RunRecorder` fed by
:func:`~esper.policies.evaluation.evaluate_policy`), as the command would run it.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from esper.analysis.runs import Run, load_run
from esper.commands.evaluate import evaluate_command
from esper.conf import compose
from esper.platform.recorder import RunRecorder
from esper.platform.runs import new_run_dir, run_state
from esper.policies.base import Policy
from esper.policies.evaluation import evaluate_policy
from esper.workloads.factory import build_organism
from tests.organisms import TINY_ORGANISM

__all__ = ["LAYER_SIZES", "baseline_run", "scripted_run"]

LAYER_SIZES = {"layers.0.weight": 64 * 32, "layers.1.weight": 32 * 16, "layers.2.weight": 16 * 10}
"""Weights per masked layer of the tiny organism (a 64-32-16-10 MLP)."""


def _only_run(storage: Path) -> Run:
    (run_dir,) = storage.iterdir()
    run = load_run(run_dir)
    assert run.damage() == [] and run.finished, f"{run_dir}: {run.damage()} ({run.state})"
    return run


def baseline_run(storage: Path, policy: str, overrides: list[str]) -> Run:
    """``esper evaluate policy=POLICY`` on the tiny organism, in a fresh ``storage`` folder."""
    overrides = [
        f"policy={policy}",
        *TINY_ORGANISM,
        f"cluster.storage_path={storage}",
        *overrides,
    ]
    evaluate_command(compose(overrides), overrides, None, False, None, Console(file=io.StringIO()))
    return _only_run(storage)


def scripted_run(storage: Path, policy: Policy, overrides: list[str]) -> Run:
    """A scripted surgeon on the tiny organism, recorded as ``esper evaluate`` records a run."""
    cfg = compose([*TINY_ORGANISM, f"cluster.storage_path={storage}", *overrides])
    run_dir = new_run_dir(cfg, "evaluate", "scripted")
    organism = build_organism(cfg)
    surgeries = len(organism.stream) // cfg.policy.surgery_interval - 1
    with (
        run_state(run_dir),
        RunRecorder(run_dir, cfg, "evaluate", "scripted", policy.name) as recorder,
    ):
        evaluate_policy(
            organism,
            policy,
            surgeries,
            on_step=lambda i, step: recorder.step(organism, step),
            on_events=recorder.events,
        )
    return _only_run(storage)
