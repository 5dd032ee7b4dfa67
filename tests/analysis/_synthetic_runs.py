"""Small synthetic run directories for the comparison, report and notebook tests.

They follow the event-log contract (``esper.events.schema``): Parquet parts under
``RUN/<table>/trial=T/replica=R/part-NNNNNN.parquet`` and a ``run.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from esper.events.learning import record_iteration
from esper.events.schema import EVENTS, METRICS

__all__ = ["LAYERS", "REWARD", "write_run", "write_sweep"]

LAYERS = ("fc1.weight", "fc2.weight", "out.weight")
REWARD = {"alpha": 1.0, "beta": 0.1, "gamma": 0.1, "delta": 0.0, "epsilon": 0.5}


def _write(table: pa.Table, run_dir: Path, name: str, trial: str, replica: int) -> None:
    part = run_dir / name / f"trial={trial}" / f"replica={replica}"
    part.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, part / "part-000000.parquet")


def write_run(
    run_dir: Path,
    *,
    run_id: str | None = None,
    seed: int = 0,
    workload: str = "digits_permuted",
    policy: str = "emrakul",
    reward: dict[str, float] | None = None,
    replicas: int = 2,
    steps: int = 30,
    drift_every: int = 10,
    accuracy: Sequence[Sequence[float]] | None = None,
    level: float = 0.0,
    flops: float = 0.5,
    trial: str = "t0",
) -> Path:
    """Write a synthetic run; returns ``run_dir``.

    Each replica's online accuracy is ``accuracy[replica]`` if given, else a saw-tooth that
    drops at each drift (every ``drift_every`` surgeries) and climbs back, shifted by ``level``
    and by ``0.01 * replica``. ``r_flops`` is ``flops`` at every step.
    """
    run_id = run_id or run_dir.name
    rng = np.random.default_rng(seed)
    for replica in range(replicas):
        step = np.arange(steps)
        task = step // drift_every
        if accuracy is not None:
            acc = np.asarray(accuracy[replica], dtype=float)
        else:
            since = step % drift_every
            acc = 0.6 + level + 0.01 * replica + 0.03 * np.minimum(since, 8) - 0.1 * (since == 0)
        n = len(step)
        density = 0.5 + 0.1 * np.sin(step / 3.0)
        metrics: dict[str, Any] = {
            "run_id": [run_id] * n,
            "trial_id": [trial] * n,
            "replica_id": [replica] * n,
            "policy": [policy] * n,
            "drift": ["permuted"] * n,
            "task_index": task,
            "sgd_step": step * 50,
            "surgery_step": step,
            "online_accuracy": acc,
            "online_loss": 1.0 - acc,
            "density": density,
            "active_params": (density * 10_000).astype(np.int64),
            "novelty": (step % drift_every == 0).astype(float),
            "reward": acc - 0.1 * flops,
            "r_accuracy": acc,
            "r_flops": np.full(n, flops),
            "r_oscillation": np.full(n, 0.02),
            "r_gsnr": np.full(n, 0.3),
            "r_spike": np.full(n, 0.05),
            "policy_version": step,
            "node_id": ["node-a"] * n,
            "wall_time": 1.7e9 + step.astype(float),
            "writer_id": [f"{trial}/w{replica}"] * n,
            "seq": step,
        }
        _write(pa.Table.from_pydict(metrics, schema=METRICS), run_dir, "metrics", trial, replica)
        rows: dict[str, list[Any]] = {f.name: [] for f in EVENTS}
        for s in range(n):
            for li, layer in enumerate(LAYERS):
                for action in ("prune", "regrow"):
                    count = int(rng.integers(1, 20)) if (s + li) % 3 else 0
                    values = {
                        "run_id": run_id,
                        "trial_id": trial,
                        "replica_id": replica,
                        "drift": "permuted",
                        "task_index": int(task[s]),
                        "sgd_step": int(s * 50),
                        "surgery_step": s,
                        "layer": layer,
                        "action": action,
                        "count": count,
                        "indices": list(range(count)),
                        "density_before": float(density[s]) + 0.05 * li,
                        "density_after": float(density[s])
                        + 0.05 * li
                        + (0.01 if action == "regrow" else 0.0),
                        "reward": float(metrics["reward"][s]),
                        "r_accuracy": float(acc[s]),
                        "r_flops": flops,
                        "acc_before": float(acc[s]),
                        "policy_version": 1,
                        "wall_time": 1.7e9 + s,
                        "detail": "",
                        "heat": None,
                        "writer_id": f"{trial}/w{replica}",
                        "seq": len(rows["seq"]),
                    }
                    for name in rows:
                        rows[name].append(values.get(name, float("nan")))
        _write(pa.Table.from_pydict(rows, schema=EVENTS), run_dir, "events", trial, replica)
    meta = {
        "run_id": run_id,
        "command": "evaluate",
        "workload": workload,
        "policy": policy,
        "seed": seed,
        "reward": reward if reward is not None else dict(REWARD),
        "config": {"workload": {"name": workload}, "experiment": {"seed": seed}},
    }
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    return run_dir


def write_sweep(
    run_dir: Path,
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    bounds: Mapping[str, Sequence[float]],
    metric: str = "fitness",
    steps: int = 6,
) -> Path:
    """Write a synthetic sweep; returns ``run_dir``.

    Each member (trial) of ``curves`` gets the tables of :func:`write_run` (one replica) and one
    learning-curve row per entry of ``curves[trial]``, iterations numbered from 1: the entry's
    metrics and ``hp/<key>`` values, as :class:`esper.platform.population.Population` records
    them. ``run.json`` keeps the base config (:data:`REWARD`, ``heat_tau`` 1, ``search.metric``
    ``metric``), as a sweep's does.
    """
    for trial in curves:
        write_run(run_dir, trial=trial, replicas=1, steps=steps, drift_every=3)
    meta = json.loads((run_dir / "run.json").read_text())
    meta["command"] = "sweep"
    meta["config"].update(
        reward=dict(REWARD),
        policy={"name": "emrakul", "params": {"heat_tau": 1.0}},
        search={
            "algorithm": "pbt",
            "metric": metric,
            "bounds": {k: list(b) for k, b in bounds.items()},
        },
    )
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    for trial, rows in curves.items():
        for iteration, row in enumerate(rows, 1):
            record_iteration(run_dir, trial, {"iteration": iteration, **row})
    return run_dir
