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
from esper.platform.demo import DEMO_OVERRIDES, held_out_comparison
from esper.platform.ray_runtime import start_ray
from esper.platform.runs import create_run, mark_run, new_run_dir, run_state
from esper.platform.sweep import TUNE_DIR, SweepResult, run_member, run_sweep
from esper.platform.trust import sign_sweep, user_key, verify_sweep

__all__ = ["DEMO_OVERRIDES", "demo_command", "replay_command", "run_command", "sweep_command"]


def _short(key: str, keys: Sequence[str]) -> str:
    """The shortest dotted suffix of ``key`` that no other of ``keys`` ends with
    (``reward.beta`` → ``beta``, unless a mechanism's ``beta`` is searched too)."""
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        suffix = ".".join(parts[-n:])
        if not any(k != key and (k == suffix or k.endswith("." + suffix)) for k in keys):
            return suffix
    return key


def _leaderboard(result: SweepResult, cfg: EsperConfig, console: Console) -> None:
    metric, sign = cfg.search.metric, 1.0 if cfg.search.mode == "max" else -1.0
    rows = sorted(result.members, key=lambda m: sign * m.get(metric, -math.inf), reverse=True)
    sampled = [k for k in cfg.search.bounds if any(k in m for m in rows)]
    columns = {"trial": "trial", metric: "fitness", "density": "density",
               "mean_reward": "reward", "policy_version": "version"}  # fmt: skip
    columns.update({k: _short(k, sampled) for k in sampled})
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


def _new_run(cfg: EsperConfig, overrides: Sequence[str], kind: str, address: str | None) -> Path:
    """Check the policy, start or join Ray (a refused cluster leaves no run behind), then
    create the run directory."""
    if cfg.policy.name != "emrakul":
        raise ConfigError(f"{kind} trains 'emrakul', not policy.name={cfg.policy.name!r}")
    start_ray(cfg, address)
    run_dir = new_run_dir(cfg, kind, chosen_workload(cfg, overrides))
    create_run(run_dir, cfg, kind, chosen_workload(cfg, overrides), "emrakul")
    return run_dir


def run_command(overrides: Sequence[str], address: str | None, console: Console) -> SweepResult:
    """``esper run``: one member on Ray actors."""
    cfg = compose(overrides)
    run_dir = _new_run(cfg, overrides, "run", address)
    console.print(
        f"[bold]esper run[/bold] {run_dir.name}: {cfg.policy.training.replicas} replicas × "
        f"{cfg.policy.training.iterations} iterations of {cfg.policy.training.rollout} surgeries"
    )
    with run_state(run_dir):
        result = run_member(cfg, run_dir, console)
    console.print(f"member checkpoint: {run_dir / 'member.pt'}; events and metrics in {run_dir}")
    return result


def _resumed(run: Path, trust: bool) -> tuple[EsperConfig, Path]:
    """The config and run directory of a sweep to resume, refused (before Ray starts) unless
    this user signed its Tune state or ``trust`` (:func:`~esper.platform.trust.verify_sweep`)."""
    run = run.expanduser().resolve()
    meta = run / "run.json"
    if not (run / TUNE_DIR).is_dir() or not meta.exists():
        raise ConfigError(
            f"--resume {run}: not a sweep's run directory (no run.json or {TUNE_DIR}/)"
        )
    verify_sweep(run, trust)  # before tune.Tuner.restore unpickles the state
    return from_plain(json.loads(meta.read_text())["config"]), run


def _sign(run_dir: Path, console: Console) -> None:
    """Sign the sweep's Tune state as it stops; a failure is a warning, never raised over the
    sweep's own outcome (the state is then resumed with ``--trust``)."""
    if not (run_dir / TUNE_DIR).is_dir():
        return  # stopped before Tune wrote anything: nothing to resume
    try:
        sign_sweep(run_dir)
    except (OSError, ConfigError) as err:
        console.print(f"[yellow]could not sign {run_dir / TUNE_DIR}[/yellow]: {err}")


def sweep_command(
    overrides: Sequence[str],
    address: str | None,
    resume: Path | None,
    console: Console,
    trust: bool = False,
) -> SweepResult:
    """``esper sweep``: a population searched by Ray Tune, or ``--resume`` an interrupted one
    (only a sweep this user signed, unless ``trust``: resuming unpickles its Tune state)."""
    if trust and resume is None:
        raise ConfigError("--trust goes with --resume RUN: a new sweep has no state to trust")
    if resume is not None:
        if overrides:
            raise ConfigError("--resume takes no overrides: the sweep keeps its own config")
        cfg, run_dir = _resumed(resume, trust)
    else:
        cfg = compose(overrides)
        user_key()  # a secret that cannot sign is refused now, not when the sweep stops
        run_dir = _new_run(cfg, overrides, "sweep", address)
    start_ray(cfg, address)  # a resumed sweep's; nothing if the new run started it
    s, t = cfg.search, cfg.policy.training
    console.print(
        f"[bold]esper sweep[/bold] {run_dir.name}{' (resumed)' if resume else ''}: "
        f"{s.algorithm.value} over {', '.join(s.bounds) or 'nothing'}, {s.num_samples} members × "
        f"{t.replicas} replicas × {t.iterations} iterations; fitness {s.metric}"
    )
    if resume is not None:
        mark_run(run_dir, "running")
    with run_state(run_dir) as outcome:
        try:
            result = run_sweep(cfg, run_dir, console, resume=resume is not None)
        finally:  # a normal end, an error, Ctrl-C: the state is signed for --resume
            _sign(run_dir, console)
        if result.failed:
            reasons = "; ".join(f"{trial}: {error}" for trial, error in result.failed)
            outcome.fail(f"{len(result.failed)} of {s.num_samples} members failed: {reasons}")
    _leaderboard(result, cfg, console)
    if outcome.error is not None:  # the others' results are above and in the run directory
        raise RunError(outcome.error)
    return result


def replay_command(
    source: Path, trial: str, overrides: Sequence[str], address: str | None, console: Console
) -> SweepResult:
    """``esper sweep --replay RUN --trial T``: member ``T``'s PBT schedule re-run from scratch
    as a run of its own (:mod:`esper.platform.replay`)."""
    from esper.platform.replay import replay_member, replay_source

    if overrides:
        raise ConfigError("--replay takes no overrides: the schedule is the sweep's member's")
    cfg, first, rows = replay_source(source, trial)
    workload = str(json.loads((source / "run.json").read_text()).get("workload", "replay"))
    start_ray(cfg, address)
    run_dir = new_run_dir(cfg, "replay", workload)
    create_run(run_dir, cfg, "replay", workload, "emrakul",
               replay_of=str(source.expanduser().resolve()), replay_trial=trial)  # fmt: skip
    console.print(f"[bold]esper sweep --replay[/bold] {run_dir.name}: member {trial} of {source}")
    with run_state(run_dir):
        result = replay_member(cfg, first, rows, run_dir, console)
    _leaderboard(result, cfg, console)
    return result


def demo_command(overrides: Sequence[str], address: str | None, console: Console) -> SweepResult:
    """``esper demo``: :data:`DEMO_OVERRIDES` (then ``overrides``) as a sweep."""
    result = sweep_command([*DEMO_OVERRIDES, *overrides], address, None, console)
    trial = str(result.best.get("trial", ""))
    if trial:
        cfg = compose([*DEMO_OVERRIDES, *overrides])
        console.print(
            "is it any good? the best member's policy against RigL on a seed no member trained on …"
        )
        comparison = held_out_comparison(cfg, result.run_dir, trial)
        console.print(f"[bold]{comparison.line()}[/bold]", soft_wrap=True)
    return result
