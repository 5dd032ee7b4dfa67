"""``esper bench primacy``: which surgeon restores an agent's plasticity after a misleading start?

The primacy-bias experiment of Nikishin et al. (ICML 2022, arXiv 2205.07802) on a living
network. A DQN agent (:mod:`esper.workloads.rl.agent`) learns CartPole in two phases of equal
length: first a **misleading** one in which every step costs a point instead of paying one
(the ``reward_scale`` dynamics drift, flipped: the agent learns to fall fast), then the **real**
task. Its replay buffer still holds the misleading transitions when the task turns, and its
network has fitted them: the question is how fast each surgeon lets it learn the real task.

Surgeons: ``dense`` (no surgery), ``dense + resets`` (Nikishin's remedy: the last layer
re-initialised periodically, :class:`~esper.policies.baselines.periodic_reset.PeriodicReset`),
``redo`` (dormant units recycled, Sokar et al. 2023), ``rigl`` at the sparsity budget, and
``emrakul`` at the budget with the checkpoint given (by default the one the quality benchmark
trained on the supervised drift suite: it has never seen an agent, and the report says so).

A control, ``dense, never misled``, learns the real task from the first step: its score over
the same number of real-task steps from a fresh network is what the misled agents lose.

Per run, the score of a phase is the mean online score over it (the agent's normalised
episodic return, ``[0, 1]``); the experiment's measure is the real phase's. Seeds are paired
units: the table gives each surgeon's mean with a 95 % BCa interval and its paired difference
from ``dense`` (:mod:`esper.analysis.intervals`). Every run is a Ray task.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from esper.analysis.intervals import bootstrap_interval, paired_interval
from esper.bench.harness import machine_info
from esper.bench.tasks import interval_cell, pick_preset, ray_map, write_experiment

__all__ = ["PRESETS", "SURGEONS", "PrimacyPreset", "run_primacy", "run_surgeon"]


@dataclass(frozen=True)
class PrimacyPreset:
    """Size of the experiment.

    Attributes:
        name: Preset name.
        phase_steps: Environment steps (= host updates) per phase.
        surgery_interval: ``K``, steps between surgeries.
        seeds: Paired units.
        hidden: Widths of the Q-network's hidden layers.
        density: Budget of the sparse surgeons.
        batch_size: Replay minibatch size.
        overrides: Further workload overrides (exploration, target period, ...).
    """

    name: str
    phase_steps: int
    surgery_interval: int
    seeds: tuple[int, ...]
    hidden: tuple[int, ...] = (128, 128)
    density: float = 0.1
    batch_size: int = 64
    overrides: tuple[str, ...] = field(default_factory=tuple)


PRESETS = {
    "small": PrimacyPreset("small", phase_steps=8000, surgery_interval=100, seeds=(0, 1, 2, 3, 4)),
    "tiny": PrimacyPreset(
        "tiny",
        phase_steps=240,
        surgery_interval=40,
        seeds=(0, 1),
        hidden=(16, 16),
        batch_size=16,
        overrides=("workload.dataset.params.exploration_steps=100",),
    ),
}
"""``small``: about 20 minutes on 2 cores; ``tiny``: the test suite's."""

SURGEONS: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "dense, never misled": ("dense", False, {}),
    "dense": ("dense", False, {}),
    "dense+resets": ("periodic_reset", False, {"layers": 1}),
    "redo": ("redo", False, {"threshold": 0.1}),
    "rigl": ("rigl", True, {}),
    "emrakul": ("emrakul", True, {}),
}
"""Label → (policy, sparse at the budget, parameters); clocks are set from the phase length.
The control ``dense, never misled`` learns the real task from the start: its "real phase" is
its *first* one, the same number of real-task steps from a fresh network, the reference the
misled agents are measured against."""

CONTROL = "dense, never misled"

DEFAULT_CHECKPOINT = Path("benchmarks/results/quality-emrakul.pt")


def _overrides(
    preset: PrimacyPreset, policy: str, sparse: bool, seed: int, misled: bool = True
) -> list[str]:
    hidden = ",".join(str(h) for h in preset.hidden)
    return [
        "workload=cartpole_misled",
        *([] if misled else ["workload.drifts=[]"]),
        f"workload.schedule.params.task_length={preset.phase_steps}",
        f"workload.host.params.hidden=[{hidden}]",
        f"workload.batch_size={preset.batch_size}",
        *preset.overrides,
        f"policy={policy}",
        f"policy.density={preset.density if sparse else 1.0}",
        f"policy.surgery_interval={preset.surgery_interval}",
        f"experiment.seed={seed}",
    ]


def run_surgeon(
    preset: PrimacyPreset, label: str, seed: int, checkpoint: str | None
) -> dict[str, Any]:
    """One run: the agent's online score per host update, and each phase's mean."""
    from esper.conf import compose
    from esper.policies.base import make_policy
    from esper.policies.checkpoints import load_policy
    from esper.policies.evaluation import evaluate_policy
    from esper.threads import one_thread
    from esper.workloads.factory import build_organism

    policy, sparse, params = SURGEONS[label]
    params = dict(params)
    period = max(preset.surgery_interval, preset.phase_steps // 4)
    if policy in ("periodic_reset", "redo"):
        params["interval"] = period
    if policy == "rigl":  # updates at every surgery, never frozen: the stream goes on
        params.update(delta_t=preset.surgery_interval, t_end=10 * 2 * preset.phase_steps)
    cfg = compose(_overrides(preset, policy, sparse, seed, misled=label != CONTROL))
    scores: list[float] = []
    with one_thread():
        organism = build_organism(cfg)
        surgeon = load_policy(Path(checkpoint)) if policy == "emrakul" and checkpoint else (
            make_policy(policy, **params))  # fmt: skip
        surgeries = 2 * preset.phase_steps // preset.surgery_interval - 1
        report = evaluate_policy(
            organism, surgeon, surgeries,
            on_step=lambda _, step: scores.extend(step.info["accuracies"]),
        )  # fmt: skip
    curve = np.asarray(scores[: 2 * preset.phase_steps], dtype=float)
    first, real = curve[: preset.phase_steps], curve[preset.phase_steps :]
    if label == CONTROL:  # the same number of real-task steps, from a fresh network
        first, real = np.full(0, np.nan), first
    return {
        "surgeon": label, "seed": seed,
        "misleading": float(first.mean()) if first.size else None,
        "real": float(real.mean()) if real.size else float("nan"),
        "real_last_quarter": float(real[-max(1, real.size // 4) :].mean()) if real.size else
        float("nan"), "density": report.density, "diverged": report.diverged,
        "curve": curve[:: preset.surgery_interval].tolist(),
    }  # fmt: skip


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = {label: sorted((r for r in runs if r["surgeon"] == label), key=lambda r: r["seed"])
          for label in SURGEONS}  # fmt: skip
    dense = [r["real"] for r in by["dense"]]
    out: dict[str, Any] = {}
    for label, rows in by.items():
        real = [r["real"] for r in rows]
        column = {k: bootstrap_interval([r[k] for r in rows]).to_json()
                  for k in ("real", "real_last_quarter", "misleading")}  # fmt: skip
        out[label] = {
            **column,
            "minus_dense": None if label == "dense" else paired_interval(real, dense).to_json(),
            "density": float(np.mean([r["density"] for r in rows])),
        }
    return out


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "| surgeon | density | real phase | its last quarter | Δ real vs dense | misleading |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in summary.items():
        cells = [interval_cell(row["real"]), interval_cell(row["real_last_quarter"]),
                 interval_cell(row["minus_dense"], "{:+.3f}"),
                 interval_cell(row["misleading"])]  # fmt: skip
        lines.append(f"| {label} | {row['density']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(runs: list[dict[str, Any]], preset: PrimacyPreset) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label in SURGEONS:
        curves = [r["curve"] for r in runs if r["surgeon"] == label]
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)
        steps = np.arange(n) * preset.surgery_interval
        ax.plot(steps, mean, label=label)
    ax.axvline(preset.phase_steps, color="grey", linestyle="--", linewidth=1)
    ax.text(preset.phase_steps, 1.0, " the real task begins", va="top", fontsize=8)
    ax.set(xlabel="environment steps", ylabel="normalised return (online)", ylim=(0, 1.05),
           title=f"Primacy bias on CartPole ({len(preset.seeds)} seeds, mean)")  # fmt: skip
    ax.legend(fontsize=8)
    return fig


def run_primacy(
    preset_name: str | PrimacyPreset,
    json_path: Path,
    checkpoint: Path | None = DEFAULT_CHECKPOINT,
    address: str | None = None,
    num_cpus: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run every surgeon on every seed as Ray tasks; write the JSON (with the machine), the
    markdown table (``PATH.md``) and the plot (``PATH-curves.png``).

    Raises:
        ValueError: an unknown preset, or a checkpoint that does not exist.
    """
    console = console or Console()
    preset = pick_preset(preset_name, PRESETS, "primacy")
    if checkpoint is not None and not checkpoint.is_file():
        raise ValueError(f"--checkpoint {checkpoint} does not exist (train one with "
                         "esper bench quality, or pass another)")  # fmt: skip
    started = time.perf_counter()
    path = None if checkpoint is None else str(checkpoint.resolve())
    jobs = [(preset, label, seed, path) for label in SURGEONS for seed in preset.seeds]
    runs = ray_map(run_surgeon, jobs, "primacy", address, num_cpus, console)
    summary = _summary(runs)
    table = _table(summary)
    result = {
        "preset": asdict(preset), "machine": machine_info(),
        "seconds": round(time.perf_counter() - started, 1),
        "emrakul_checkpoint": None if checkpoint is None else str(checkpoint),
        "summary": summary, "runs": sorted(runs, key=lambda r: (r["surgeon"], r["seed"])),
    }  # fmt: skip
    write_experiment(json_path, result, table, "curves", _plot(runs, preset))
    console.print(table)
    return result
