"""``esper prequential``: a dense network learning prequentially on a drifting stream.

Trains the workload's host network test-then-train on its stream, shows progress, and prints
per-task online accuracy: the drop right after each drift and the steps it takes to recover.
The run directory (``<storage>/<run name>/``) receives the composed config and a JSON summary,
written to a temporary directory first and renamed into place
(:func:`esper.files.atomic_directory`), so a failed run leaves nothing.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from esper.config import EsperConfig
from esper.errors import DivergedError
from esper.files import atomic_directory
from esper.platform.runs import run_name, runs_root
from esper.workloads.factory import build_host, build_optimizer, build_stream
from esper.workloads.prequential import StepRecord, TaskSummary, prequential_step, summarize_tasks

__all__ = ["run_prequential"]


def _table(summaries: list[TaskSummary], regression: bool) -> Table:
    table = Table(title="Online (prequential) performance per task")
    table.add_column("task", justify="right")
    table.add_column("steps", justify="right")
    if regression:
        table.add_column("mean loss", justify="right")
        for s in summaries:
            table.add_row(str(s.task_index), str(s.steps), f"{s.loss:.3f}")
        return table
    for name in ("before drift", "after drift", "drop", "recovered in", "task mean"):
        table.add_column(name, justify="right")
    previous: TaskSummary | None = None
    for s in summaries:
        before = f"{previous.last_accuracy:.3f}" if previous else "—"
        drop = f"{previous.last_accuracy - s.first_accuracy:+.3f}" if previous else "—"
        if previous is None:
            recovered = "—"
        elif s.recovery_steps is None:
            recovered = "not yet"
        else:
            recovered = f"{s.recovery_steps} steps"
        table.add_row(
            str(s.task_index),
            str(s.steps),
            before,
            f"{s.first_accuracy:.3f}",
            drop,
            recovered,
            f"{s.accuracy:.3f}",
        )
        previous = s
    return table


def run_prequential(
    cfg: EsperConfig, workload: str, config_yaml: str, console: Console | None = None
) -> tuple[Path, list[TaskSummary]]:
    """Run the demo and return the run directory and the per-task summaries.

    Args:
        cfg: The composed, validated configuration.
        workload: The workload label (:func:`esper.commands.naming.chosen_workload`), for the
            run name and the summary.
        config_yaml: The composed config as YAML, saved with the run.
        console: Where to print (a default ``rich`` console when ``None``).
    """
    console = console or Console()
    root = runs_root(cfg)  # a bad storage path is refused before training
    seed = cfg.experiment.seed
    stream = build_stream(cfg.workload, seed)
    model = build_host(cfg.workload, stream, seed)
    optimizer = build_optimizer(cfg.workload, model, seed=seed)
    total = cfg.experiment.steps or len(stream)
    kind = stream.source.kind
    name = run_name(cfg, "prequential", workload)
    console.print(
        f"[bold]esper prequential[/bold] {name}: {type(model).__name__} on {stream.source.name} "
        f"({stream.drift_name}, {stream.num_tasks} tasks × {stream.schedule.task_length} steps), "
        f"{total} prequential steps"
    )
    records: list[StepRecord] = []
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("training", total=total)
        for _ in range(total):
            record = prequential_step(model, optimizer, stream.next_batch(), kind)
            records.append(record)
            if not math.isfinite(record.loss):
                raise DivergedError(
                    f"loss became {record.loss} at step {record.step}; "
                    f"lower workload.lr (now {cfg.workload.lr})"
                )
            if (record.step + 1) % cfg.experiment.log_every == 0 or record.step + 1 == total:
                recent = records[-cfg.experiment.log_every :]
                metric = (
                    f"acc {sum(r.accuracy for r in recent) / len(recent):.3f}"
                    if kind == "classification"
                    else f"loss {sum(r.loss for r in recent) / len(recent):.3f}"
                )
                progress.update(
                    bar,
                    completed=record.step + 1,
                    description=f"task {record.task_index} · {metric}",
                )
                if not console.is_terminal:
                    console.print(
                        f"step {record.step + 1}/{total} · task {record.task_index} · {metric}"
                    )
    elapsed = time.perf_counter() - started
    summaries = summarize_tasks(records, cfg.experiment.recovery_window)
    console.print(_table(summaries, regression=kind == "regression"))
    summary: dict[str, Any] = {
        "run": name,
        "workload": workload,
        "seed": seed,
        "steps": total,
        "seconds": round(elapsed, 3),
        "tasks": [asdict(s) for s in summaries],
    }
    run_dir = root / name
    with atomic_directory(run_dir) as tmp:
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        (tmp / "prequential.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    console.print(f"{total} steps in {elapsed:.1f} s; run written to {run_dir}")
    return run_dir, summaries
