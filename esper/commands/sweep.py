"""``esper run``, ``esper sweep`` and ``esper demo``: populations of living networks on Ray.

``esper run`` trains one member (the single-learner loop on Ray actors, no Tune); ``esper
sweep`` searches a population with Ray Tune (``search=pbt``, ``pb2``, ``optuna``, ``random``,
``grid``); ``esper demo`` is a small PBT sweep over reward weights sized for a laptop (the
README's main job). All three refuse bad input (exit 2) before any actor starts, print a
leaderboard at the end, and say where to look further.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from esper.commands.naming import chosen_workload
from esper.conf import ConfigError, compose, from_plain
from esper.config import EsperConfig
from esper.errors import RunError
from esper.platform.runs import create_run, mark_run, new_run_dir, run_state
from esper.platform.ray_runtime import start_ray
from esper.platform.sweep import TUNE_DIR, SweepResult, run_member, run_sweep

__all__ = ["DEMO_OVERRIDES", "demo_command", "run_command", "sweep_command"]

DEMO_OVERRIDES: tuple[str, ...] = (
    "policy=emrakul",
    "search=pbt",
    "cluster=laptop",
    "experiment.name=demo",
    "search.num_samples=4",
    "search.perturbation_interval=2",
    "policy.density=0.1",
    "policy.surgery_interval=25",
    "policy.training.replicas=2",
    "policy.training.iterations=8",
    "policy.training.rollout=3",
    "policy.training.workloads=[digits_permuted,digits_rotated]",
)
"""``esper demo``: 4 members × 2 replicas (permuted and rotated digits) at 10% density, PBT
over the reward weights with an exploit-and-explore step every 2 of 8 iterations."""


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _leaderboard(result: SweepResult, cfg: EsperConfig, console: Console) -> None:
    metric, sign = cfg.search.metric, 1.0 if cfg.search.mode == "max" else -1.0
    rows = sorted(result.members, key=lambda m: sign * m.get(metric, -math.inf), reverse=True)
    sampled = [k for k in cfg.search.bounds if any(k in m for m in rows)]
    columns = {"trial": "trial", metric: "fitness", "density": "density",
               "mean_reward": "reward", "policy_version": "version"}  # fmt: skip
    columns.update({k: _short(k) for k in sampled})
    table = Table(title=f"leaderboard: fitness = {metric} ({cfg.search.mode})")
    for key, title in columns.items():
        table.add_column(title, justify="left" if key == "trial" else "right", no_wrap=True)
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in cells))
    console.print(table)
    run = result.run_dir
    if result.best:
        best = {k: round(result.best[k], 4) for k in sampled if k in result.best}
        console.print(f"best member: {result.best.get('trial', '')} {json.dumps(best)}")
    console.print("look further:")
    if result.mlflow_uri:
        console.print(f"  mlflow ui --backend-store-uri {result.mlflow_uri}", soft_wrap=True)
    console.print(f"  esper report {run} --out {run / 'report.html'}", soft_wrap=True)
    query = "SELECT trial, action, count(*) AS n FROM events GROUP BY ALL ORDER BY ALL"
    console.print(f'  esper events {run} --sql "{query}"', soft_wrap=True)


def _new_run(cfg: EsperConfig, overrides: Sequence[str], kind: str) -> Path:
    if cfg.policy.name != "emrakul":
        raise ConfigError(f"{kind} trains 'emrakul', not policy.name={cfg.policy.name!r}")
    run_dir = new_run_dir(cfg, kind, chosen_workload(cfg, overrides))
    create_run(run_dir, cfg, kind, chosen_workload(cfg, overrides), "emrakul")
    return run_dir


def run_command(overrides: Sequence[str], address: str | None, console: Console) -> SweepResult:
    """``esper run``: one member on Ray actors."""
    cfg = compose(overrides)
    run_dir = _new_run(cfg, overrides, "run")
    start_ray(cfg, address)
    console.print(
        f"[bold]esper run[/bold] {run_dir.name}: {cfg.policy.training.replicas} replicas × "
        f"{cfg.policy.training.iterations} iterations of {cfg.policy.training.rollout} surgeries"
    )
    with run_state(run_dir):
        result = run_member(cfg, run_dir, console)
    console.print(f"member checkpoint: {run_dir / 'member.pt'}; events and metrics in {run_dir}")
    return result


def _resumed(run: Path) -> tuple[EsperConfig, Path]:
    run = run.expanduser().resolve()
    meta = run / "run.json"
    if not (run / TUNE_DIR).is_dir() or not meta.exists():
        raise ConfigError(
            f"--resume {run}: not a sweep's run directory (no run.json or {TUNE_DIR}/)"
        )
    return from_plain(json.loads(meta.read_text())["config"]), run


def sweep_command(
    overrides: Sequence[str], address: str | None, resume: Path | None, console: Console
) -> SweepResult:
    """``esper sweep``: a population searched by Ray Tune, or ``--resume`` an interrupted one."""
    if resume is not None:
        if overrides:
            raise ConfigError("--resume takes no overrides: the sweep keeps its own config")
        cfg, run_dir = _resumed(resume)
    else:
        cfg = compose(overrides)
        run_dir = _new_run(cfg, overrides, "sweep")
    start_ray(cfg, address)
    s, t = cfg.search, cfg.policy.training
    console.print(
        f"[bold]esper sweep[/bold] {run_dir.name}{' (resumed)' if resume else ''}: "
        f"{s.algorithm.value} over {', '.join(s.bounds) or 'nothing'}, {s.num_samples} members × "
        f"{t.replicas} replicas × {t.iterations} iterations; fitness {s.metric}"
    )
    if resume is not None:
        mark_run(run_dir, "running")
    with run_state(run_dir) as outcome:
        result = run_sweep(cfg, run_dir, console, resume=resume is not None)
        if result.failed:
            reasons = "; ".join(f"{trial}: {error}" for trial, error in result.failed)
            outcome.fail(f"{len(result.failed)} of {s.num_samples} members failed: {reasons}")
    _leaderboard(result, cfg, console)
    if outcome.error is not None:  # the others' results are above and in the run directory
        raise RunError(outcome.error)
    return result


def demo_command(overrides: Sequence[str], address: str | None, console: Console) -> SweepResult:
    """``esper demo``: :data:`DEMO_OVERRIDES` (then ``overrides``) as a sweep."""
    return sweep_command([*DEMO_OVERRIDES, *overrides], address, None, console)
