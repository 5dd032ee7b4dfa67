"""``esper train-policy``: train Emrakul with progress output and save a checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from esper.conf import compose
from esper.conf.schema import EsperConfig
from esper.policies.training import TrainResult, save_checkpoint, train_policy

__all__ = ["train_command"]


def _run_name(cfg: EsperConfig, workload: str) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    learner = cfg.policy.training.learner.value
    return f"train-{learner}-{workload}-s{cfg.experiment.seed}-{stamp}"


def train_command(
    cfg: EsperConfig, workload: str, out: Path | None, console: Console
) -> tuple[Path, TrainResult]:
    """Train on ``policy.training.workloads`` (or the configured workload) and save.

    Returns:
        The checkpoint path and the training result.
    """
    t = cfg.policy.training
    base = [f"experiment.seed={cfg.experiment.seed}"]
    workloads: list[str | EsperConfig] = [cfg]
    if t.workloads:
        # Each preset keeps the budget, interval, reward and seed of this run.
        shared = [
            "policy=emrakul",
            f"policy.density={cfg.policy.density}",
            f"policy.surgery_interval={cfg.policy.surgery_interval}",
            *(
                f"reward.{k}={getattr(cfg.reward, k)}"
                for k in ("alpha", "beta", "gamma", "delta", "epsilon")
            ),
            *base,
        ]
        workloads = [compose([f"workload={w}", *shared]) for w in t.workloads]
    name = _run_name(cfg, workload)
    path = out or Path(cfg.cluster.storage_path).expanduser().resolve() / name / "policy.pt"
    console.print(
        f"[bold]esper train-policy[/bold] {name}: {t.learner.value} on "
        f"{', '.join(t.workloads) or workload}, {t.surgeries} surgeries "
        f"(episodes of {t.rollout}), density budget {cfg.policy.density}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
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
            progress.update(bar, completed=min(t.surgeries, metrics["surgery"]), description=text)
            if not console.is_terminal:
                console.print(text)

        result = train_policy(
            cfg,
            workloads=workloads,
            surgeries=t.surgeries,
            learner=t.learner.value,
            progress=report,
            rollout=t.rollout,
            policy_params=dict(cfg.policy.params),
            learner_params=dict(t.learner_params),
            imitation=t.imitation,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, result)
    history = path.with_name("history.json")
    tmp = history.with_name(".history.json.tmp")
    tmp.write_text(json.dumps(result.history, indent=2, default=float))
    tmp.replace(history)
    console.print(f"checkpoint written to {path}")
    return path, result
