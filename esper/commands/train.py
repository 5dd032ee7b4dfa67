"""``esper train-policy``: train Emrakul with progress output and save a checkpoint."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from esper.conf import compose
from esper.config import EsperConfig
from esper.files import atomic_write_text
from esper.platform.recorder import RunRecorder
from esper.platform.runs import new_run_dir, run_state
from esper.policies.checkpoints import save_policy
from esper.policies.training import TrainResult, train_policy
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["train_command"]


def train_command(
    cfg: EsperConfig, workload: str, out: Path | None, console: Console
) -> tuple[Path, TrainResult]:
    """Train on ``policy.training.workloads`` (or the configured workload) and save.

    Returns:
        The checkpoint path and the training result.
    """
    t = cfg.policy.training
    # Each named preset replaces the workload only: budget, interval, reward, seed and device
    # stay those of this run.
    organisms = [dataclasses.replace(cfg, workload=compose([f"workload={w}"]).workload)
                 for w in t.workloads] or [cfg]  # fmt: skip
    run_dir = new_run_dir(cfg, "train", workload)
    name = run_dir.name
    path = out or run_dir / "policy.pt"
    # One recorder per training organism (replica), all in the run directory.
    recorders = [
        RunRecorder(run_dir, c, "train-policy", workload, "emrakul", replica_id=i, create=i == 0)
        for i, c in enumerate(organisms)
    ]

    def record(i: int, organism: Organism, step: OrganismStep) -> None:
        recorders[i].events(step.events)
        recorders[i].step(organism, step)

    console.print(
        f"[bold]esper train-policy[/bold] {name}: {t.learner} on "
        f"{', '.join(t.workloads) or workload}, {t.surgeries} surgeries "
        f"(episodes of {t.rollout}), density budget {cfg.policy.density}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with run_state(run_dir):  # complete once the checkpoint is saved
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("training", total=t.surgeries)

            def report(metrics: dict[str, Any]) -> None:
                if metrics.get("episode", 0) < 0:
                    console.print(f"behaviour cloning: {metrics}")
                    return
                text = (
                    f"episode {metrics['episode']} · reward {metrics['mean_reward']:.3f} · "
                    f"acc {metrics['online_accuracy']:.3f}"
                )
                progress.update(
                    bar, completed=min(t.surgeries, metrics["surgery"]), description=text
                )
                if not console.is_terminal:
                    console.print(text)

            result = train_policy(cfg, organisms, progress=report, on_step=record)
        for recorder in recorders:
            recorder.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_policy(path, result)
        atomic_write_text(
            path.with_name("history.json"), json.dumps(result.history, indent=2, default=float)
        )
    console.print(f"checkpoint written to {path}; events and metrics in {run_dir}")
    return path, result
