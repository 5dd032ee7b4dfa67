"""``esper bench strategies``: which of the seed's strategies a trained Emrakul shows, how often,
and whether they help.

Each surgeon (one or more Emrakul checkpoints, and ``rigl`` / ``rigl_elastic`` as the rule-based
references) runs on the drift suite's streams and evaluation seeds with its event log recorded
as a real run directory (:func:`esper.bench.quality_evaluation.evaluate_run` with
``record_to``); every detector (:func:`esper.analysis.detectors.detect_all`) then reads it back.
Per surgeon and detector the report has the episodes, the runs with at least one, the episodes
per 100 surgeries and, for detectors whose episodes have a start (Lazarus, ghost circuits),
the online accuracy over the ``k`` surgeries after an episode against matched quiet windows
(:func:`esper.analysis.strategy_effects.episode_effects`); the same for every heat burst, a
tunnelling episode or not (``heat_burst``: does heating pay at all?). Breathing is also
measured directly: the correlation between the organism's loss surprise and the density its
surgeon sets next (:func:`esper.analysis.breathing.breathing_correlation`), per run and
summarised.

Figures: density against loss surprise for every elastic surgeon (breathing), and the policy's
τ, the online loss and the turnover around the first Lazarus episode found (if any).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from esper.analysis.breathing import breathing_summary
from esper.analysis.detectors.lazarus import heat_bursts
from esper.analysis.strategy_effects import EPISODE_START, episode_effects
from esper.bench.harness import machine_info
from esper.bench.quality_evaluation import evaluate_run
from esper.bench.quality_suite import SMALL_STREAMS, Stream
from esper.bench.tasks import gather, pick_preset, ray_session, remote
from esper.files import atomic_write_text, output_problem

__all__ = ["PRESETS", "StrategiesPreset", "Surgeon", "run_strategies", "switches"]


@dataclass(frozen=True)
class Surgeon:
    """One surgeon of the comparison: a label, a policy name and, for Emrakul, a checkpoint."""

    label: str
    policy: str
    checkpoint: str | None = None


@dataclass(frozen=True)
class StrategiesPreset:
    """Streams, densities and seeds of one ``esper bench strategies`` run.

    Attributes:
        name: ``small`` or ``tiny``.
        streams: Suite streams (the short ones: the detectors read every event).
        densities: Mean density budgets.
        seeds: Evaluation seeds (the quality suite's: nothing is selected here).
        baselines: Rule-based references run beside the checkpoints.
        k: Surgeries after an episode's start whose accuracy is compared.
        overrides: Config overrides of every run (``heated``: a temperature mechanism).
        sample: The checkpoints act by sampling their distributions, as in training, rather
            than greedily (a greedy Emrakul never sets its heat bit).
    """

    name: str
    streams: tuple[Stream, ...]
    densities: tuple[float, ...] = (0.1,)
    seeds: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004)
    baselines: tuple[str, ...] = ("rigl", "rigl_elastic")
    k: int = 5
    overrides: tuple[str, ...] = ()
    sample: bool = False


PER_LAYER = ("flipflop",)
"""Detectors that summarise each layer of a run rather than find episodes in it."""

_SHORT_NAMES = ("class_incremental", "label_permuted", "mnist1d_covariate", "recurring")
_SHORT = tuple(s for s in SMALL_STREAMS if s.name in _SHORT_NAMES)

PRESETS = {
    "small": StrategiesPreset("small", _SHORT),
    "tiny": StrategiesPreset(
        "tiny",
        tuple(
            Stream(s.name, (*s.overrides, "workload.num_tasks=2"), 2 * s.steps // 6)
            for s in _SHORT[-1:]
        ),
        seeds=(1000,),
    ),
    "heated": StrategiesPreset(
        "heated",
        _SHORT,
        baselines=("rigl",),
        sample=True,
        overrides=("workload.scalpel.mechanism.name=hard_concrete",),
    ),
}
"""``small``: four short suite streams × five evaluation seeds at density 0.10 (≈ 5 minutes
on 2 cores for four surgeons); ``tiny``: a smoke run; ``heated``: ``small`` under Hard Concrete
masks with the checkpoints sampling their actions, so that Emrakul's heat bursts happen and act
on the mechanism's temperature (``policy.params.mechanism_heat``), with RigL as the reference."""


def switches(preset: StrategiesPreset, who: Surgeon) -> tuple[tuple[str, Any], ...]:
    """What is set on ``who``'s loaded policy before its runs: a checkpoint samples under a
    sampling preset (a loaded policy acts greedily by default)."""
    return (("greedy", False),) if preset.sample and who.checkpoint else ()


def _surgeons(checkpoints: dict[str, Path], baselines: tuple[str, ...]) -> list[Surgeon]:
    return [*(Surgeon(label, "emrakul", str(path.resolve())) for label, path in
              checkpoints.items()), *(Surgeon(b, b) for b in baselines)]  # fmt: skip


def run_strategies(
    preset_name: str | StrategiesPreset,
    checkpoints: dict[str, Path],
    json_path: Path,
    storage: Path,
    address: str | None = None,
    num_cpus: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run every surgeon with its event log recorded, detect, and write the report and figures
    (``json_path`` and ``<stem>-breathing.png``, ``<stem>-lazarus.png``).

    Raises:
        ValueError: an unknown preset, no checkpoint, a missing checkpoint file or an output
            that cannot be written (all before any work).
    """
    console = console or Console()
    preset = pick_preset(preset_name, PRESETS, "strategies")
    if not checkpoints:
        raise ValueError("give at least one --checkpoint LABEL=PATH (an Emrakul policy)")
    for label, path in checkpoints.items():
        if not path.is_file():
            raise ValueError(f"--checkpoint {label}={path}: no such file")
    for out in (json_path, *_figures(json_path)):
        if (problem := output_problem(out)) is not None:
            raise ValueError(f"{out}: {problem}")
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    root = (storage / f"strategies-{preset.name}-{stamp}").resolve()
    surgeons = _surgeons(checkpoints, preset.baselines)
    with ray_session(address, num_cpus):
        evaluate = remote(evaluate_run)
        refs, keys = [], []
        for who, density, stream, seed in product(surgeons, preset.densities, preset.streams,
                                                  preset.seeds):  # fmt: skip
            run_dir = root / f"{who.label}-{density}-{stream.name}-{seed}"
            refs.append(evaluate.remote(stream, who.policy, density, seed, who.checkpoint,
                                        switches=switches(preset, who),
                                        overrides=preset.overrides,
                                        record_to=str(run_dir)))  # fmt: skip
            keys.append((who.label, density, stream.name, seed, str(run_dir)))
        console.print(f"[bold]esper bench strategies[/bold] {preset.name}: {len(refs)} runs "
                      f"recorded under {root}")  # fmt: skip
        runs = gather(refs, keys, "recorded runs", console)
    detected = {key: _detect(key[-1]) for key in runs}  # each log read once
    report = _report(preset, runs, detected, surgeons)
    report.update(
        machine=machine_info(), storage=str(root), wall_s=round(time.perf_counter() - started, 1),
        checkpoints={k: str(v) for k, v in checkpoints.items()},
        command=("esper bench strategies " + " ".join(f"--checkpoint {k}={v}"
                 for k, v in checkpoints.items()) + f" --preset {preset.name} --json {json_path}"
                 " --force"),
    )  # fmt: skip
    atomic_write_text(json_path, json.dumps(report, indent=1, default=_plain) + "\n")
    _plot(detected, json_path)
    console.print(_markdown(report))
    console.print(f"results written to {json_path} in {report['wall_s']:.0f} s")
    return report


def _figures(json_path: Path) -> tuple[Path, Path]:
    stem = json_path.with_suffix("")
    return Path(f"{stem}-breathing.png"), Path(f"{stem}-lazarus.png")


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {type(value)}")


def _detect(run_dir: str) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    from esper.analysis.detectors import detect_all
    from esper.analysis.runs import load_run

    run = load_run(run_dir)
    events, metrics = run.events, run.metrics
    found = detect_all(events, metrics)  # and every heat burst, an episode or not
    found["heat_burst"] = pd.DataFrame({"burst_step": heat_bursts(events)}, dtype="int64")
    return found, events, metrics


Detected = dict[tuple[Any, ...], tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]]
"""Per run key: the detectors' episodes, the events and the metrics."""


def _report(
    preset: StrategiesPreset, runs: dict[tuple[Any, ...], dict[str, Any]], detected: Detected,
    surgeons: list[Surgeon],
) -> dict[str, Any]:  # fmt: skip
    """Per surgeon and density: every detector's count, prevalence and effect."""
    found: dict[tuple[str, float], list[tuple[dict[str, pd.DataFrame], pd.DataFrame, int]]] = {}
    for key in runs:
        per_detector, _events, metrics = detected[key]
        surgeries = int(metrics["surgery_step"].nunique())
        found.setdefault((key[0], key[1]), []).append((per_detector, metrics, surgeries))
    summary = []
    for (label, density), rows in sorted(found.items()):
        surgeries = sum(s for _, _, s in rows)
        for detector in rows[0][0]:
            episodes = [d[detector] for d, _, _ in rows]
            if detector == "ghost":
                episodes = [e[e["detected"].astype(bool)] if len(e) else e for e in episodes]
            count = sum(len(e) for e in episodes)
            entry: dict[str, Any] = {
                "surgeon": label, "density": density, "detector": detector,
                "episodes": count, "runs": len(rows),
                "runs_with_episodes": sum(len(e) > 0 for e in episodes),
                "per_100_surgeries": 100.0 * count / surgeries if surgeries else None,
            }  # fmt: skip
            if detector in PER_LAYER:  # one row per layer and run: a share, not episodes
                rates = [float(v) for e in episodes for v in e.get("regrow_reprune_share", [])]
                entry["mean_rate"] = float(np.mean(rates)) if rates else None
                entry["episodes"] = entry["per_100_surgeries"] = None
            if (column := EPISODE_START.get(detector)) is not None:
                entry["effect"] = episode_effects(
                    [(m, e[column].astype(int).tolist() if len(e) else [])
                     for e, (_, m, _) in zip(episodes, rows, strict=True)], preset.k,
                )  # fmt: skip
            summary.append(entry)
    breathing_rows = [{"policy": label, "density": density, "stream": stream, "seed": seed,
                       "breathing": r["breathing"]}
                      for (label, density, stream, seed, _), r in runs.items()]  # fmt: skip
    return {
        "preset": preset.name,
        "streams": [s.name for s in preset.streams],
        "seeds": list(preset.seeds),
        "densities": list(preset.densities),
        "surgeons": [
            {"label": s.label, "policy": s.policy, "checkpoint": s.checkpoint} for s in surgeons
        ],
        "k": preset.k,
        "strategies": summary,
        "breathing": breathing_summary(breathing_rows),
        "runs": [
            {
                "surgeon": label,
                "density": d,
                "stream": s,
                "seed": seed,
                "run_dir": run_dir,
                "online_accuracy": r["metrics"]["online_accuracy"],
                "mean_flops": r["metrics"]["flops"],
                "breathing": r["breathing"],
            }
            for (label, d, s, seed, run_dir), r in runs.items()
        ],
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = ["| surgeon | density | detector | episodes | runs with | per 100 surgeries | "
             "accuracy after − matched [95% CI] |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for e in report["strategies"]:
        effect = e.get("effect")
        shown = "n/a"
        if effect and effect["mean_diff"] is not None:
            low, high = effect["ci"]
            ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None else ""
            shown = f"{effect['mean_diff']:+.3f}{ci} (n={effect['episodes']})"
        rate = e["per_100_surgeries"]
        if "mean_rate" in e:  # a per-layer rate
            mean = e["mean_rate"]
            count, rate_cell = "—", f"mean rate {'n/a' if mean is None else f'{mean:.3f}'}"
        else:
            count, rate_cell = str(e["episodes"]), "n/a" if rate is None else f"{rate:.2f}"
        runs = f"{e['runs_with_episodes']}/{e['runs']}"
        lines.append(f"| {e['surgeon']} | {e['density']} | {e['detector']} | {count} | {runs} "
                     f"| {rate_cell} | {shown} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot(detected: Detected, json_path: Path) -> None:
    """Density against loss surprise per elastic surgeon; τ, loss and turnover around the
    first Lazarus episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    breathing_path, lazarus_path = _figures(json_path)
    by_surgeon: dict[str, list[tuple[float, float]]] = {}
    lazarus_first: tuple[str, pd.DataFrame, pd.DataFrame, int] | None = None
    for key, (episodes, events, metrics) in detected.items():
        label = key[0]
        loss = metrics.groupby("surgery_step")["online_loss"].mean().sort_index()
        density = metrics.groupby("surgery_step")["density"].mean().sort_index()
        surprise = np.log(loss / loss.shift(1))
        pairs = zip(surprise.to_numpy()[:-1], density.to_numpy()[1:], strict=True)
        by_surgeon.setdefault(label, []).extend(p for p in pairs if np.isfinite(p).all())
        if lazarus_first is None and len(episodes["lazarus"]):
            start = int(episodes["lazarus"].iloc[0]["burst_step"])
            lazarus_first = (label, events, metrics, start)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in sorted(by_surgeon.items()):
        xs, ys = zip(*points, strict=True) if points else ((), ())
        if ys and max(ys) - min(ys) > 0.005:  # a fixed budget (rounding aside) shows nothing
            ax.scatter(xs, ys, s=6, alpha=0.4, label=label)
    ax.set_xlabel("loss surprise before the surgery, log(L_t / L_t-1)")
    ax.set_ylabel("global density set at the surgery")
    ax.set_title("Breathing: density against surprise")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(breathing_path, dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(3, 1, figsize=(6, 6), sharex=True)
    if lazarus_first is None:
        axes[0].set_title("No Lazarus episode was found")
    else:
        label, events, metrics, start = lazarus_first
        span = (events["surgery_step"] >= start - 10) & (events["surgery_step"] <= start + 20)
        ev = events[span]
        tau = ev.groupby("surgery_step")["policy_tau"].max()
        churn = ev[ev["action"].isin(["prune", "regrow"])].groupby("surgery_step")["count"].sum()
        near = (metrics["surgery_step"] >= start - 10) & (metrics["surgery_step"] <= start + 20)
        mt = metrics[near]
        axes[0].plot(tau.index, tau.to_numpy(), marker=".")
        axes[0].set_ylabel("policy τ")
        axes[0].set_title(f"Lazarus episode of {label} at surgery {start}")
        axes[1].plot(mt["surgery_step"], mt["online_loss"], marker=".")
        axes[1].set_ylabel("online loss")
        axes[2].bar(churn.index, churn.to_numpy())
        axes[2].set_ylabel("weights swapped")
        for ax in axes:
            ax.axvline(start, color="red", lw=0.8)
    axes[-1].set_xlabel("surgery")
    fig.tight_layout()
    fig.savefig(lazarus_path, dpi=120)
    plt.close(fig)
