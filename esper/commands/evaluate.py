"""``esper evaluate``: run one policy, or every baseline; record each run and print reports."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from esper.commands.naming import chosen_workload
from esper.conf import ConfigError, compose
from esper.config import EsperConfig
from esper.files import atomic_write_text
from esper.platform.recorder import RunRecorder
from esper.platform.runs import new_run_dir, run_state
from esper.policies.base import POLICIES, Policy, dense_start, make_policy
from esper.policies.baselines import BASELINES
from esper.policies.evaluation import EvaluationReport, evaluate_policy
from esper.workloads.factory import build_organism
from esper.workloads.organism import OrganismStep

__all__ = ["components_table", "evaluate_command", "report_table"]


def _surgeries(cfg: EsperConfig, organism_steps: int, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--surgeries must be ≥ 1, got {requested}")
        return requested
    total = cfg.experiment.steps or organism_steps
    return max(1, total // cfg.policy.surgery_interval - 1)


def _run(
    cfg: EsperConfig,
    policy: Policy,
    surgeries: int | None,
    console: Console,
    workload: str,
) -> EvaluationReport:
    run_dir = new_run_dir(cfg, "evaluate", workload)  # a bad storage path is refused first
    organism = build_organism(cfg)
    n = _surgeries(cfg, len(organism.stream), surgeries)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with (
        run_state(run_dir) as outcome,  # outermost: marked once the tables are flushed
        Progress(*columns, console=console, transient=True) as progress,
        RunRecorder(run_dir, cfg, "evaluate", workload, policy.name) as recorder,
    ):
        bar = progress.add_task(f"{policy.name}", total=n)

        def tick(i: int, step: OrganismStep) -> None:
            recorder.step(organism, step)
            progress.update(bar, completed=i + 1)

        report = evaluate_policy(organism, policy, n, on_step=tick, on_events=recorder.events)
        if report.diverged:
            outcome.fail(
                f"the host diverged (non-finite loss) at surgery {report.surgeries} of {n}; "
                f"lower workload.lr (now {cfg.workload.lr})"
            )
        atomic_write_text(run_dir / "report.json", json.dumps(report.to_json(), indent=2))
    if report.diverged:
        console.print(f"[red]{policy.name}: {outcome.error}; run marked failed → {run_dir}[/red]")
        return report
    console.print(
        f"{policy.name}: online accuracy {report.online_accuracy:.3f}, density "
        f"{report.density:.3f}, {report.surgeries} surgeries → {run_dir}"
    )
    return report


def report_table(reports: Sequence[EvaluationReport], title: str) -> Table:
    """One row per policy: accuracy, density, FLOPs, oscillation and the reward."""
    table = Table(title=title)
    for column in ("policy", "online acc", "final acc", "density", "FLOPs", "oscill.", "reward"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in reports:
        table.add_row(
            r.policy,
            f"{r.online_accuracy:.3f}",
            f"{r.final_accuracy:.3f}",
            f"{r.density:.3f}",
            f"{r.flops:.3f}",
            f"{r.oscillation:.4f}",
            f"{r.reward:.4f}",
        )
    return table


def components_table(reports: Sequence[EvaluationReport]) -> Table:
    """One row per policy: the mean of each raw reward component."""
    table = Table(title="Mean reward components (raw, unweighted)")
    keys = list(reports[0].components) if reports else []
    table.add_column("policy")
    for key in keys:
        table.add_column(key, justify="right")
    for r in reports:
        table.add_row(r.policy, *(f"{r.components[k]:.4f}" for k in keys))
    return table


def _policy_for(cfg: EsperConfig) -> Policy:
    if cfg.policy.name not in POLICIES:
        valid = ", ".join(POLICIES.names())
        raise ConfigError(f"unknown policy {cfg.policy.name!r} at policy.name; valid: {valid}")
    return make_policy(cfg.policy.name, **cfg.policy.params)


def _budgeted(cfg: EsperConfig) -> EsperConfig:
    """``cfg`` with the organism's starting density for its policy: a policy that prunes
    from dense (GMP) starts at 1 and reaches ``policy.density``.

    Raises:
        ConfigError: ``policy=dense`` with a density below 1 (it would run a static sparse
            mask under the name "dense"; that surgeon is ``policy=static``).
    """
    if cfg.policy.name == "dense" and cfg.policy.density < 1.0:
        raise ConfigError(
            f"policy=dense keeps every weight, but policy.density={cfg.policy.density}: use "
            "policy=static for a fixed sparse mask, or drop policy.density"
        )
    density, params = dense_start(cfg.policy.density, cfg.policy.name, cfg.policy.params)
    return dataclasses.replace(
        cfg, policy=dataclasses.replace(cfg.policy, density=density, params=params)
    )


def evaluate_command(
    cfg: EsperConfig,
    overrides: Sequence[str],
    checkpoint: Path | None,
    baselines: bool,
    surgeries: int | None,
    console: Console,
) -> list[EvaluationReport]:
    """Evaluate the configured policy, a checkpoint, or (``baselines``) every baseline.

    Each evaluation writes a run directory (``run.json``, ``config.yaml``, ``report.json`` and
    the ``events`` and ``metrics`` tables) under ``cluster.storage_path``.
    """
    workload = chosen_workload(cfg, overrides)
    reports: list[EvaluationReport] = []
    if baselines:
        for name in BASELINES:
            # Each baseline with its own config-group settings (e.g. dense keeps density 1.0
            # unless the overrides set it): the same stream, seed and budget otherwise.
            sub = compose([f"policy={name}", *overrides])
            if name == "dense":  # the reference keeps every weight whatever the budget asked
                sub = dataclasses.replace(sub, policy=dataclasses.replace(sub.policy, density=1.0))
            sub = _budgeted(sub)
            reports.append(_run(sub, _policy_for(sub), surgeries, console, workload))
        title = "Baselines"
    elif checkpoint is not None:
        from esper.policies.checkpoints import load_policy

        reports.append(_run(cfg, load_policy(checkpoint), surgeries, console, workload))
        title = f"Policy from {checkpoint}"
    else:
        cfg = _budgeted(cfg)
        reports.append(_run(cfg, _policy_for(cfg), surgeries, console, workload))
        title = f"Policy {cfg.policy.name}"
    console.print(report_table(reports, title))
    console.print(components_table(reports))
    for r in reports:
        layers = ", ".join(f"{name}={d:.3f}" for name, d in r.densities.items())
        console.print(f"[dim]{r.policy} density per layer: {layers}[/dim]")
    return reports
