"""``esper bench double-loss``: does synchronized retention avoid the double loss?

A network learns a long-tailed drifting stream (digits, three rare classes at 2 % of the
samples each, a new input permutation every task: the ``digits_long_tail`` workload) with a
replay buffer. Pruning the weights and pruning the data can each cost the rare classes; done
together and independently they can compound: the rare samples leave the buffer while the
weights that serve them are cut. Five arms, paired by seed:

* ``neither``: dense network, large buffer (the reference);
* ``weights only``: RigL at the sparsity budget, large buffer;
* ``data only``: dense network, small buffer (the data budget);
* ``both, independent``: RigL and the small buffer, each deciding alone;
* ``both, synchronized``: the same, with synchronized retention
  (:mod:`esper.workloads.memory.retention`): prunes of the weights serving a rare class are
  refused and the rare samples those weights were measured on stay in the buffer.

Measures per run: overall online accuracy; **tail accuracy**, the rare classes' accuracy over
every distribution seen so far, measured at each task's end (a held-out draw, outside the
stream's randomness) and averaged over task ends; the same for the common classes; and the
**double-loss cases** of the run's events (:func:`~esper.analysis.detectors.double_loss`).
Every run is a Ray task; intervals are 95 % BCa over seeds, differences paired by seed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from esper.analysis.detectors.double_loss import double_loss
from esper.analysis.intervals import bootstrap_interval, paired_interval
from esper.bench.harness import machine_info
from esper.bench.tasks import interval_cell, pick_preset, ray_map, write_experiment
from esper.workloads.memory import SELECTIONS

__all__ = ["ARMS", "PRESETS", "DoubleLossPreset", "arm_overrides", "run_arm", "run_double_loss"]


@dataclass(frozen=True)
class DoubleLossPreset:
    """Size of the experiment.

    Attributes:
        name: Preset name.
        tasks: Tasks of the stream (a new input permutation each).
        task_length: SGD steps per task.
        surgery_interval: ``K``.
        seeds: Paired units.
        density: Weight budget of the sparse arms.
        small_buffer: Data budget of the data-pruned arms (samples).
        large_buffer: Buffer of the arms without data pruning.
        strategy: Selection rule of every buffer.
        eval_samples: Held-out samples per class group and distribution at each task end.
        overrides: Further config overrides for every run (``workload.memory.retention.*``).
    """

    name: str
    tasks: int
    task_length: int
    surgery_interval: int
    seeds: tuple[int, ...]
    density: float = 0.1
    small_buffer: int = 100
    large_buffer: int = 2000
    strategy: str = "reservoir"
    eval_samples: int = 300
    overrides: tuple[str, ...] = ()


PRESETS = {
    "small": DoubleLossPreset(
        "small", tasks=5, task_length=400, surgery_interval=50, seeds=(0, 1, 2, 3, 4)
    ),
    "tiny": DoubleLossPreset(
        "tiny",
        tasks=2,
        task_length=40,
        surgery_interval=20,
        seeds=(0, 1),
        small_buffer=20,
        large_buffer=100,
        eval_samples=30,
    ),
}
"""``small``: a few minutes on 2 cores; ``tiny``: the test suite's."""

ARMS: dict[str, tuple[bool, bool, bool]] = {
    "neither": (False, False, False),
    "weights only": (True, False, False),
    "data only": (False, True, False),
    "both, independent": (True, True, False),
    "both, synchronized": (True, True, True),
}
"""Label → (weights pruned to the budget, data pruned to the small buffer, synchronized)."""


def arm_overrides(preset: DoubleLossPreset, arm: str, seed: int) -> list[str]:
    """The config overrides of ``arm``'s run on ``seed``."""
    sparse, small, synchronized = ARMS[arm]
    return [
        "workload=digits_long_tail",
        f"workload.num_tasks={preset.tasks}",
        f"workload.schedule.params.task_length={preset.task_length}",
        f"workload.memory.capacity={preset.small_buffer if small else preset.large_buffer}",
        f"workload.memory.strategy={preset.strategy}",
        f"workload.memory.synchronized={str(synchronized).lower()}",
        f"policy={'rigl' if sparse else 'dense'}",
        f"policy.density={preset.density if sparse else 1.0}",
        f"policy.surgery_interval={preset.surgery_interval}",
        f"experiment.seed={seed}",
        *preset.overrides,
    ]


def _held_out(organism: Any, upto: int, samples: int) -> tuple[float, float]:
    """Accuracy on the rare and on the common classes, over the distributions of tasks
    ``0..upto``, on fresh draws (their own generator: the stream is untouched)."""
    import torch

    from esper.workloads.imbalance import ClassImbalance

    stream = organism.stream
    tail = next(d for d in stream.drifts if isinstance(d, ClassImbalance))
    gen = torch.Generator().manual_seed(upto)
    scores: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        for task in range(upto + 1):
            step = task * stream.schedule.task_length
            distribution = stream.schedule.phase(step).current
            for rare, classes in ((True, tail.rare), (False, tail.common)):
                x, y = stream.source.sample(gen, samples, distribution, classes)
                for drift in stream.drifts:
                    if drift is not tail:
                        x, y = drift.apply(x, y, distribution, step, gen)
                out = organism.host(x.to(organism.device))
                scores[rare].append(float((out.argmax(dim=1).cpu() == y).float().mean()))
    return float(np.mean(scores[True])), float(np.mean(scores[False]))


def run_arm(
    preset: DoubleLossPreset,
    arm: str,
    seed: int,
    checkpoint: str | None = None,
    data_action: bool = True,
) -> dict[str, Any]:
    """One run: online accuracy, tail and common accuracy at task ends, double-loss cases.
    With ``checkpoint`` a trained Emrakul (acting greedily) is the weight surgeon instead of
    RigL, and the result also counts its data-side choices (``protect_rate``: the share of its
    layer decisions that asked for protection); ``data_action=False`` withholds its General's
    data action from the organism (the memory's own refresh and rule apply), to tell what its
    weight surgery does from what its data action does."""
    import pandas as pd

    from esper.conf import compose
    from esper.policies.base import make_policy
    from esper.policies.checkpoints import load_policy
    from esper.policies.evaluation import evaluate_policy
    from esper.threads import one_thread
    from esper.workloads.factory import build_organism

    cfg = compose(arm_overrides(preset, arm, seed))
    sparse = ARMS[arm][0]
    params = {"delta_t": preset.surgery_interval, "t_end": 10**9} if sparse else {}
    rows: list[dict[str, Any]] = []
    ends: list[tuple[float, float]] = []

    surgeon = load_policy(checkpoint) if checkpoint else make_policy(cfg.policy.name, **params)
    if not data_action:
        surgeon.data_action = lambda: None  # type: ignore[method-assign]
    choices: list[dict[str, Any]] = []

    def at_step(_: int, step: Any) -> None:
        if (choice := _data_choices(surgeon)) is not None:
            choices.append(choice)
        if step.info["sgd_step"] % preset.task_length == 0 and step.info["sgd_step"] > 0:
            ends.append(_held_out(organism, step.info["sgd_step"] // preset.task_length - 1,
                                  preset.eval_samples))  # fmt: skip

    with one_thread():
        organism = build_organism(cfg)
        surgeries = preset.tasks * preset.task_length // preset.surgery_interval - 1
        report = evaluate_policy(
            organism, surgeon, surgeries, on_step=at_step,
            on_events=lambda events: rows.extend(e.to_row() for e in events),
        )  # fmt: skip
    found = double_loss(pd.DataFrame(rows), pd.DataFrame()) if rows else pd.DataFrame()
    total = lambda col: int(found[col].sum()) if col in found else 0  # noqa: E731
    return {
        "arm": arm, "seed": seed, "online": report.online_accuracy,
        "tail": float(np.mean([t for t, _ in ends])), "tail_final": ends[-1][0],
        "common": float(np.mean([c for _, c in ends])), "density": report.density,
        "double_loss_cases": total("double_loss_cases"),
        "served_weights_pruned": total("served_weights_pruned"),
        "protected_weights": total("protected_weights"),
        "tail_samples_evicted": total("tail_samples_evicted"),
        "tail_samples_kept": total("tail_samples_kept"),
        "tail_curve": [t for t, _ in ends],
        "protect_rate": float(np.mean([c["protect"] for c in choices])) if choices else 0.0,
        "protect_probability": float(np.mean([c["p_protect"] for c in choices]))
        if choices else 0.0,
        "data_actions": sorted({(c["strategy"], round(c["refresh"], 2)) for c in choices
                                if c["strategy"] is not None}),
    }  # fmt: skip


def _data_choices(surgeon: Any) -> dict[str, Any] | None:
    """An Emrakul surgeon's last data-side choices: the share of layers that asked for
    protection, the mean probability of asking (its actor's protect bit), the General's
    refresh share and rule (``None`` for any other surgeon, or before its first decision)."""
    import torch

    from esper.policies.emrakul import EmrakulPolicy

    if not isinstance(surgeon, EmrakulPolicy) or surgeon.last is None:
        return None
    last, probability = surgeon.last, 0.0
    if surgeon.codec.protect and surgeon.specialist is not None:
        with torch.no_grad():
            logits = surgeon.specialist.distribution(last.obs, last.ids).logits
        assert logits is not None
        probability = float(torch.sigmoid(logits[:, -1]).mean())
    data = surgeon.data_action()
    return {"protect": float(np.mean([a.protect for a in last.actions.values()])),
            "p_protect": probability, "refresh": data.refresh if data else 1.0,
            "strategy": data.strategy if data else None}  # fmt: skip


_MEASURES = ("online", "tail", "common", "tail_final", "double_loss_cases",
             "served_weights_pruned", "protected_weights", "tail_samples_evicted")  # fmt: skip


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = {arm: sorted((r for r in runs if r["arm"] == arm), key=lambda r: r["seed"])
          for arm in ARMS}  # fmt: skip
    out: dict[str, Any] = {}
    for arm, rows in by.items():
        out[arm] = {m: bootstrap_interval([float(r[m]) for r in rows]).to_json()
                    for m in _MEASURES}  # fmt: skip
        out[arm]["density"] = float(np.mean([r["density"] for r in rows]))
    sync, indep = by["both, synchronized"], by["both, independent"]
    out["synchronized minus independent"] = {
        m: paired_interval([float(r[m]) for r in sync], [float(r[m]) for r in indep]).to_json()
        for m in ("online", "tail", "common", "tail_final", "double_loss_cases")
    }
    return out


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "| arm | density | online accuracy | tail accuracy | common accuracy | "
        "double-loss cases | served weights pruned | prunes refused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        row = summary[arm]
        cells = [interval_cell(row[m]) for m in ("online", "tail", "common")] + [
            interval_cell(row[m], fmt)
            for m, fmt in (("double_loss_cases", "{:.1f}"), ("served_weights_pruned", "{:.0f}"),
                           ("protected_weights", "{:.0f}"))
        ]  # fmt: skip
        lines.append(f"| {arm} | {row['density']:.2f} | " + " | ".join(cells) + " |")
    diff = summary["synchronized minus independent"]
    lines += [
        "",
        "Synchronized minus independent (paired by seed): "
        + ", ".join(f"{m} {interval_cell(diff[m], '{:+.3f}')}" for m in diff),
    ]
    return "\n".join(lines) + "\n"


def _plot(runs: list[dict[str, Any]], preset: DoubleLossPreset) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in ARMS:
        curves = np.array([r["tail_curve"] for r in runs if r["arm"] == arm])
        ax.plot(np.arange(1, curves.shape[1] + 1), curves.mean(axis=0), marker="o", label=arm)
    ax.set(xlabel="end of task", ylabel="rare-class accuracy, tasks so far", ylim=(0, 1.02),
           title=f"Double loss on a long tail ({len(preset.seeds)} seeds, mean)")  # fmt: skip
    ax.legend(fontsize=8)
    return fig


def run_double_loss(
    preset_name: str | DoubleLossPreset,
    json_path: Path,
    address: str | None = None,
    num_cpus: int | None = None,
    console: Console | None = None,
    strategy: str | None = None,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run every arm on every seed as Ray tasks; write the JSON (with the machine), the
    markdown table (``PATH.md``) and the plot (``PATH-tail.png``).

    Args:
        strategy: The buffers' selection rule instead of the preset's.
        overrides: Config overrides added to every run (composed once here, so a bad one is
            refused before any run).

    Raises:
        ValueError: an unknown preset.
        KeyError: an unknown selection rule (naming the valid ones).
        esper.conf.ConfigError: a bad override (naming the key).
    """
    console = console or Console()
    preset = pick_preset(preset_name, PRESETS, "double-loss")
    if strategy is not None:
        SELECTIONS[strategy]  # an unknown rule is refused before any run, naming the valid ones
        preset = replace(preset, strategy=strategy)
    if overrides:
        from esper.conf import compose

        preset = replace(preset, overrides=preset.overrides + tuple(overrides))
        compose(arm_overrides(preset, "both, synchronized", 0))
    started = time.perf_counter()
    jobs = [(preset, arm, seed) for arm in ARMS for seed in preset.seeds]
    runs = ray_map(run_arm, jobs, "double-loss", address, num_cpus, console)
    summary = _summary(runs)
    table = _table(summary)
    result = {
        "preset": asdict(preset), "machine": machine_info(),
        "seconds": round(time.perf_counter() - started, 1), "summary": summary,
        "runs": sorted(runs, key=lambda r: (r["arm"], r["seed"])),
    }  # fmt: skip
    write_experiment(json_path, result, table, "tail", _plot(runs, preset))
    console.print(table)
    return result
