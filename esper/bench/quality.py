"""``esper bench quality``: train Emrakul, then score every surgeon on the drift suite.

The protocol (:mod:`esper.bench.quality_suite` holds the streams and seeds):

1. **Train** each Emrakul variant (the full policy and the trained ablations) with
   :func:`~esper.policies.training.train_policy` on one organism per (stream, density), seeded
   from the preset's training seed, saving a checkpoint candidate every ``snapshot_every``
   surgeries (and after the RigL-imitation warm start).
2. **Select** each variant's checkpoint by mean online accuracy on the validation seeds.
3. **Evaluate** every condition on every stream and evaluation seed, one prequential run each,
   scored by :func:`esper.analysis.quality.run_metrics`.
4. **Summarize** with BCa bootstrap intervals and paired differences
   (:func:`esper.analysis.quality.summarize`), write the JSON, the markdown table (and the
   README's, between ``<!-- quality:begin -->`` and ``<!-- quality:end -->``) and the plot of
   the loss-of-plasticity reproduction.

Every run is a Ray task, so the same command fills a laptop's cores or, with ``--address``, a
cluster's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from esper.analysis.plots import plasticity_curves
from esper.analysis.quality import (
    RunScore,
    markdown_tables,
    plasticity_summary,
    run_metrics,
    summarize,
)
from esper.bench.harness import machine_info
from esper.bench.quality_suite import (
    PRESETS,
    RIGL_HORIZON,
    TRAINED_ABLATIONS,
    Condition,
    QualityPreset,
    Stream,
    conditions,
)
from esper.bench.tasks import gather, ray_session, remote
from esper.files import atomic_write_text, output_problem

__all__ = ["README_BEGIN", "README_END", "plot_plasticity", "run_quality"]

README_BEGIN = "<!-- quality:begin -->"
README_END = "<!-- quality:end -->"
FOCUS = "emrakul"


def _compose(overrides: Sequence[str]) -> Any:
    from esper.conf import compose

    return compose(list(overrides))


def _policy_overrides(
    stream: Stream, policy: str, density: float, horizon: float = RIGL_HORIZON
) -> list[str]:
    extra = [f"policy={policy}", f"policy.density={density}"]
    if policy == "rigl":  # RigL stops updating the mask at T_end = horizon × the stream
        extra.append(f"policy.params.t_end={max(1, int(horizon * stream.steps))}")
    return [*stream.overrides, *extra]


def evaluate_run(
    stream: Stream,
    policy: str,
    density: float,
    seed: int,
    checkpoint: str | None = None,
    switches: tuple[tuple[str, Any], ...] = (),
    horizon: float = RIGL_HORIZON,
) -> dict[str, Any]:
    """One prequential run of ``policy`` (or the checkpoint, with the ablation ``switches``
    set on it) on ``stream``: its metrics and its end-of-task accuracies. A host that diverges
    scores 0 on the steps it did not run."""
    from esper.analysis.quality import task_end_accuracies
    from esper.policies.base import dense_start, make_policy
    from esper.policies.checkpoints import load_policy
    from esper.policies.evaluation import evaluate_policy
    from esper.threads import one_thread
    from esper.workloads.factory import build_organism

    overrides = _policy_overrides(stream, policy, density, horizon)
    cfg = _compose([*overrides, f"experiment.seed={seed}"])
    start, params = dense_start(cfg.policy.density, cfg.policy.name, cfg.policy.params)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, density=start))
    accuracies: list[float] = []
    with one_thread():
        organism = build_organism(cfg)
        surgeon = load_policy(checkpoint) if checkpoint else make_policy(policy, **params)
        for attribute, value in switches:
            setattr(surgeon, attribute, value)
        surgeries = stream.steps // cfg.policy.surgery_interval - 1
        report = evaluate_policy(
            organism,
            surgeon,
            surgeries,
            on_step=lambda _, step: accuracies.extend(step.info["accuracies"]),
        )
    task_length = int(cfg.workload.schedule.params["task_length"])
    acc = np.zeros(stream.steps)
    acc[: min(len(accuracies), stream.steps)] = accuracies[: stream.steps]
    reversal = 0.0 if np.isnan(report.oscillation) else report.oscillation
    metrics = run_metrics(acc, task_length, report.density, report.flops, reversal)
    return {"metrics": metrics, "task_end": task_end_accuracies(acc, task_length).tolist(),
            "diverged": report.diverged}  # fmt: skip


def train_variant(preset: QualityPreset, variant: str, out_dir: str) -> list[tuple[int, str]]:
    """Train one Emrakul variant on the training organisms; returns ``(surgeries, path)`` of
    every checkpoint candidate."""
    from esper.policies.checkpoints import save_policy
    from esper.policies.training import TrainResult, train_policy

    base = [f"experiment.seed={preset.train_seed}", "policy=emrakul"]
    if variant == "no_general":
        base.append("policy.params.use_general=false")
    cfg = _compose(base)
    imitation = 0 if variant == "no_imitation" else preset.imitation
    training = dataclasses.replace(
        cfg.policy.training, surgeries=preset.train_surgeries, rollout=preset.rollout,
        imitation=imitation, learner_params=dict(preset.learner_params),
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, training=training))
    organisms = [
        _compose(
            [*_policy_overrides(s, "emrakul", d), f"experiment.seed={preset.train_seed + 1 + i}"]
        )
        for i, (s, d) in enumerate(product(preset.streams, preset.densities))
    ]
    folder = Path(out_dir) / variant
    folder.mkdir(parents=True, exist_ok=True)
    saved: list[tuple[int, str]] = []

    def snapshot(result: TrainResult) -> None:
        done = int(result.history[-1]["surgery"])
        last = saved[-1][0] if saved else -1
        final = done >= preset.train_surgeries
        if done == 0 or final or done - max(last, 0) >= preset.snapshot_every:
            path = folder / f"surgery-{done:06d}.pt"
            save_policy(path, result)
            saved.append((done, str(path)))

    train_policy(cfg, organisms, on_episode=snapshot)
    return saved


def _variants(preset: QualityPreset) -> list[str]:
    return ["emrakul", *(a for a in preset.ablations if a in TRAINED_ABLATIONS)]


def _select(
    preset: QualityPreset,
    snapshots: dict[str, list[tuple[int, str]]],
    console: Console,
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The checkpoint of each condition variant, chosen on the validation seeds."""
    evaluate = remote(evaluate_run)
    refs, keys = [], []
    for variant, snaps in snapshots.items():
        for (surgeries, path), stream, seed in product(
            snaps, preset.streams, preset.validation_seeds
        ):
            refs.append(evaluate.remote(stream, "emrakul", preset.densities[0], seed, path))
            keys.append((variant, surgeries, stream.name, seed))
    results = gather(refs, keys, "checkpoint selection (validation seeds)", console)
    table: list[dict[str, Any]] = []
    chosen: dict[str, str] = {}
    for variant, snaps in snapshots.items():
        best = None
        for surgeries, path in snaps:
            scores = [v["metrics"]["online_accuracy"] for k, v in results.items()
                      if k[0] == variant and k[1] == surgeries]  # fmt: skip
            mean = float(np.mean(scores))
            table.append({"variant": variant, "surgeries": surgeries, "validation": mean})
            if surgeries > 0 and (best is None or mean > best[0]):
                best = (mean, path, surgeries)
        assert best is not None, f"{variant} saved no checkpoint after RL"
        chosen[variant] = best[1]
        console.print(f"{variant}: checkpoint after {best[2]} surgeries (validation {best[0]:.3f})")
        if variant == "emrakul" and snaps[0][0] == 0:
            chosen["imitation_only"] = snaps[0][1]
    return chosen, table


def _check_writable(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and (problem := output_problem(path)) is not None:
            raise ValueError(f"cannot write {path}: {problem}")


def _update_readme(readme: Path, table: str, command: str) -> None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_BEGIN} … {README_END} section")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    block = f"{README_BEGIN}\nReproduce with `{command}`.\n\n{table}{README_END}"
    atomic_write_text(readme, head + block + tail)


def run_quality(
    preset_name: str | QualityPreset,
    json_path: Path,
    readme: Path | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    storage: str = "runs",
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the quality benchmark ``preset_name`` (a name of :data:`PRESETS`, or a preset) and
    record it (see the module docstring).

    Emrakul's checkpoint candidates go to ``<storage>/quality-<preset>-<UTC time>/<variant>/``;
    the JSON names the chosen ones.

    Raises:
        KeyError: an unknown preset.
        ValueError: an output path that cannot be written (checked before any work).
    """
    console = console or Console()
    if isinstance(preset_name, QualityPreset):
        preset = preset_name
    elif preset_name in PRESETS:
        preset = PRESETS[preset_name]
    else:
        raise KeyError(f"unknown preset {preset_name!r}; valid: {', '.join(PRESETS)}")
    _check_writable(json_path, readme)
    if readme is not None and not readme.is_file():
        raise ValueError(f"--readme {readme} is not a file")
    if readme is not None and README_BEGIN not in readme.read_text():
        raise ValueError(f"{readme} has no {README_BEGIN} … {README_END} section")
    started = time.perf_counter()
    with ray_session(address, num_cpus):
        return _run(preset, json_path, readme, storage, started, console)


def _run(
    preset: QualityPreset,
    json_path: Path,
    readme: Path | None,
    storage: str,
    started: float,
    console: Console,
) -> dict[str, Any]:
    plot_path = json_path.with_name(json_path.stem + "-plasticity.png")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out_dir = (Path(storage) / f"quality-{preset.name}-{stamp}").resolve()
    train = remote(train_variant)
    variants = _variants(preset)
    console.print(f"[bold]esper bench quality[/bold] {preset.name}: training {', '.join(variants)}")
    snapshots = gather([train.remote(preset, v, str(out_dir)) for v in variants], variants,
                        "training Emrakul", console)  # fmt: skip
    chosen, selection = _select(preset, snapshots, console)
    evaluate = remote(evaluate_run)
    streams = {s.name: s for s in preset.streams}
    refs, keys = [], []
    for cond, seed in product(conditions(preset), preset.seeds):
        for name in cond.streams:
            path = chosen[cond.variant] if cond.variant else None
            args = (streams[name], cond.policy, cond.density, seed, path, cond.switches,
                    cond.horizon)  # fmt: skip
            refs.append(evaluate.remote(*args))
            keys.append((cond, name, seed))
    runs = gather(refs, keys, "evaluation", console)
    scores = [RunScore(c.label, c.density, name, seed, r["metrics"])
              for (c, name, seed), r in runs.items()]  # fmt: skip
    results, paired = summarize(scores, FOCUS)
    table = markdown_tables(results, paired)
    command = f"esper bench quality --preset {preset.name} --json {json_path} --force"
    task_end = [
        {
            "policy": c.label,
            "density": c.density,
            "stream": n,
            "seed": s,
            "task_end_accuracy": r["task_end"],
        }
        for (c, n, s), r in runs.items()
        if n == preset.plasticity_stream
    ]
    report = {
        "machine": machine_info(),
        "preset": preset.name,
        "command": command,
        "seeds": list(preset.seeds),
        "validation_seeds": list(preset.validation_seeds),
        "train_seed": preset.train_seed,
        "streams": [dataclasses.asdict(s) for s in preset.streams],
        "selection": selection,
        "chosen": chosen,
        "wall_s": round(time.perf_counter() - started, 1),
        "diverged": [
            {"policy": c.label, "density": c.density, "stream": n, "seed": s}
            for (c, n, s), r in runs.items()
            if r["diverged"]
        ],
        "results": results,
        "paired": paired,
        "plasticity": plasticity_summary(task_end, preset.plasticity_stream),
        "task_end": task_end,
        "runs": [s.to_json() for s in scores],
    }
    atomic_write_text(json_path, json.dumps(report, indent=1, default=_plain) + "\n")
    plot_plasticity(report, plot_path)
    if readme is not None:
        _update_readme(readme, table, command)
    console.print(table)
    console.print(f"results written to {json_path} and {plot_path} in {report['wall_s']:.0f} s")
    return report


PLOTTED = ("dense", "cbp", "static", "rigl", "rigl_continual", "emrakul")
"""Conditions drawn in the plasticity plot (dense and CBP at density 1, the others at the
preset's first density); the JSON holds every condition's curves."""


def plot_plasticity(report: dict[str, Any], path: Path) -> None:
    """Draw the loss-of-plasticity plot of a quality report (its ``task_end`` curves)."""
    first = max((r["density"] for r in report["task_end"] if r["density"] < 1.0), default=1.0)
    rows = [r for r in report["task_end"] if r["policy"] in PLOTTED
            and (r["density"] == 1.0 or r["density"] == first)]  # fmt: skip
    stream = report["plasticity"][0]["stream"] if report["plasticity"] else ""
    plasticity_curves(rows, stream).savefig(path, dpi=120)


def _plain(value: Any) -> Any:
    if isinstance(value, Condition):
        return value.label
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
