"""``esper bench quality``: train Emrakul, then score every surgeon on the drift suite.

This module runs the protocol end to end and writes its report; each stage's work lives in its
own module (:mod:`esper.bench.quality_suite` holds the presets, seeds and conditions):

1. **Train** (:mod:`esper.bench.quality_training`) each Emrakul variant (the full policy and
   the trained ablations) with :func:`~esper.policies.training.train_policy` on one organism
   per (stream, density), once per training seed (run 0 trains every variant, the other runs
   the full policy), saving a checkpoint candidate every ``snapshot_every`` surgeries (and
   after the RigL-imitation warm start). A preset with ``trainer="sweep"`` trains each run's
   full policy by a PBT sweep instead (:mod:`esper.bench.quality_sweep`, in this Ray), whose
   members' checkpoints are the candidates. With ``checkpoint`` (``--checkpoint``) nothing
   trains and ``emrakul`` is that file (a preset with ablations or several runs refuses it).
2. **Select** (:mod:`esper.bench.quality_selection`) on the validation seeds, by mean online
   accuracy: each run's checkpoint of each variant, each sparse baseline's layer allocation
   and each anchor's allocation and options (:mod:`esper.bench.quality_anchors`) at each
   density (their runs start while Emrakul trains).
3. **Evaluate** every condition (baselines and anchors as chosen only) on every stream and
   evaluation seed, one prequential run each (:mod:`esper.bench.quality_evaluation`), scored by
   :func:`esper.analysis.quality.run_metrics`.
4. **Summarize** with BCa bootstrap intervals and paired differences
   (:func:`esper.analysis.quality.summarize`), the spread between training runs and what RL
   adds over each run's imitation warm start (:func:`esper.analysis.quality.between_runs`);
   write the JSON (with the ``training`` provenance of every run), the markdown tables
   (:mod:`esper.analysis.quality_tables`; also the README's, between
   ``<!-- quality:begin -->`` and ``<!-- quality:end -->``) and the plot of the
   loss-of-plasticity reproduction.

Every run is a Ray task, so the same command fills a laptop's cores or, with ``--address``, a
cluster's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from esper.analysis.breathing import breathing_summary
from esper.analysis.plots import plasticity_curves
from esper.analysis.quality import RunScore, between_runs, plasticity_summary, summarize
from esper.analysis.quality_tables import markdown_runs, markdown_tables
from esper.bench.credit import credit_summary, measure_stream
from esper.bench.harness import machine_info
from esper.bench.quality_evaluation import compose_config, evaluate_run, policy_overrides
from esper.bench.quality_presets import PRESETS
from esper.bench.quality_selection import (
    choose_candidates,
    chosen_key,
    select_checkpoints,
    submit_candidate_runs,
    training_section,
)
from esper.bench.quality_suite import (
    Condition,
    QualityPreset,
    conditions,
    run_labels,
    trained_variants,
)
from esper.bench.quality_sweep import check_member_fits, is_swept, sweep_config, train_by_sweep
from esper.bench.quality_training import (
    TrainedVariant,
    check_given_checkpoint,
    given_checkpoint,
    train_variant,
    training_overrides,
)
from esper.bench.tasks import gather, ray_session, remote
from esper.files import atomic_write_text, output_problem

__all__ = [
    "README_BEGIN",
    "README_END",
    "TrainedVariant",
    "credit_setup",
    "evaluate_run",
    "plot_plasticity",
    "run_quality",
]

README_BEGIN = "<!-- quality:begin -->"
README_END = "<!-- quality:end -->"


def credit_setup(preset: QualityPreset, checkpoint: str) -> list[tuple[Any, ...]]:
    """The credit measurement's jobs (:func:`esper.bench.credit.measure_stream` arguments):
    every stream at the first density, on run 0's organism seeds (training seeds), with
    ``checkpoint`` acting; none when ``credit_surgeries`` is 0 or there is no control."""
    if preset.credit_surgeries < 1 or preset.control == "none":
        return []
    seeds = preset.organism_seeds(0)[:: len(preset.densities)]  # each stream, 1st density
    first, n, control = preset.densities[0], preset.credit_surgeries, preset.control
    return [
        (stream, first, seed, checkpoint, n, control)
        for stream, seed in zip(preset.streams, seeds, strict=True)
    ]


def _check_writable(*paths: Path | None) -> None:
    for path in paths:
        if path is not None and (problem := output_problem(path)) is not None:
            raise ValueError(f"cannot write {path}: {problem}")


def _check_configs(preset: QualityPreset, trains: bool = True) -> None:
    """Compose every training config (where it ``trains``), every allocation and every
    anchor's candidates once, so a bad setting (an unknown ``control``, blind group,
    allocation or config key) fails before any work."""
    for run, variant in trained_variants(preset) if trains else ():
        if is_swept(preset, variant):
            sweep_config(preset, run, Path(preset.name))  # and its organisms' seeds
        else:
            compose_config(training_overrides(preset, variant, run))
    for allocation in preset.allocations:
        compose_config(policy_overrides(preset.streams[0], "static", preset.densities[0],
                                        allocation=allocation))  # fmt: skip
    for c in conditions(preset):
        if c.config_overrides and c.allocation in (None, preset.allocations[0]):
            compose_config(policy_overrides(preset.streams[0], c.policy, c.density,
                                            overrides=c.config_overrides))  # fmt: skip


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
    checkpoint: Path | None = None,
    train_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the quality benchmark ``preset_name`` (a name of :data:`PRESETS`, or a preset) and
    record it (see the module docstring).

    Emrakul's checkpoint candidates go to
    ``<storage>/quality-<preset>-<UTC time>/run<r>/<variant>/``; the JSON names the chosen ones.
    With ``checkpoint``, nothing trains: ``emrakul`` is that policy (the JSON's ``training``
    section records its path and SHA-256). ``train_overrides`` are appended to the preset's
    :attr:`~esper.bench.quality_suite.QualityPreset.train_overrides`.

    Raises:
        KeyError: an unknown preset.
        ValueError: an output path that cannot be written, a setting the config refuses, or
            a ``checkpoint`` that is missing or given to a preset that trains several
            policies (checked before any work).
    """
    console = console or Console()
    if isinstance(preset_name, QualityPreset):
        preset = preset_name
    elif preset_name in PRESETS:
        preset = PRESETS[preset_name]
    else:
        raise KeyError(f"unknown preset {preset_name!r}; valid: {', '.join(PRESETS)}")
    if train_overrides:
        if checkpoint is not None:
            raise ValueError("--train-override changes a training, and --checkpoint trains none")
        if preset.trainer == "sweep":
            raise ValueError(
                f"--train-override reaches in-process trainings only; preset {preset.name!r} "
                "trains by a sweep, whose settings are its sweep_overrides"
            )
        extra = (*preset.train_overrides, *train_overrides)
        preset = dataclasses.replace(preset, train_overrides=extra)
    _check_writable(json_path, readme)
    if readme is not None and not readme.is_file():
        raise ValueError(f"--readme {readme} is not a file")
    if readme is not None and README_BEGIN not in readme.read_text():
        raise ValueError(f"{readme} has no {README_BEGIN} … {README_END} section")
    if checkpoint is not None:
        check_given_checkpoint(preset, checkpoint)
    _check_configs(preset, trains=checkpoint is None)
    started = time.perf_counter()
    with ray_session(address, num_cpus):
        return _run(preset, json_path, readme, storage, started, console, checkpoint)


def _run(
    preset: QualityPreset,
    json_path: Path,
    readme: Path | None,
    storage: str,
    started: float,
    console: Console,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    plot_path = json_path.with_name(json_path.stem + "-plasticity.png")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    out_dir = (Path(storage) / f"quality-{preset.name}-{stamp}").resolve()
    train = remote(train_variant)
    jobs = trained_variants(preset) if checkpoint is None else []
    doing = ("training " + ", ".join(f"{v} (run {r})" for r, v in jobs) if jobs
             else f"evaluating {checkpoint} as emrakul")  # fmt: skip
    console.print(f"[bold]esper bench quality[/bold] {preset.name}: {doing}")
    swept = [(r, v) for r, v in jobs if is_swept(preset, v)]  # in this process, after the tasks
    for run, _ in swept:
        check_member_fits(sweep_config(preset, run, out_dir))
    tasks = [job for job in jobs if job not in swept]
    train_refs = [train.remote(preset, v, str(out_dir), r) for r, v in tasks]
    candidate_refs, candidate_keys = submit_candidate_runs(preset)  # while Emrakul trains
    done = {job: train_by_sweep(preset, job[0], out_dir, console) for job in swept}
    done.update(gather(train_refs, tasks, "training Emrakul", console))
    trained = {job: done[job] for job in jobs}  # in training order, not finishing order
    if checkpoint is None:
        chosen, selection = select_checkpoints(preset, trained, console)
        paths = {key: c.path for key, c in chosen.items()}
        training: Any = training_section(preset, out_dir, trained, chosen, selection)
    else:
        paths, selection = {(0, "emrakul"): str(checkpoint.resolve())}, []
        training = given_checkpoint(checkpoint)  # a dict, where runs are a list
    choices = choose_candidates(
        preset,
        gather(candidate_refs, candidate_keys, "allocations and options (validation seeds)",
               console),
        console,
    )  # fmt: skip
    picked = {(r["policy"], r["density"]): r["chosen"] for r in choices.allocation}
    options = {(r["policy"], r["density"]): r["chosen"] for r in choices.options}
    credit_jobs = credit_setup(preset, paths[(0, "emrakul")])
    credit_refs = [remote(measure_stream).remote(*job) for job in credit_jobs]
    evaluated = [c for c in conditions(preset) if choices.evaluates(c)]
    evaluate = remote(evaluate_run)
    streams = {s.name: s for s in preset.streams}
    refs, keys = [], []
    for cond, seed in product(evaluated, preset.seeds):
        for name in cond.streams:
            path = paths[(cond.run, cond.variant)] if cond.variant else None
            args = (streams[name], cond.policy, cond.density, seed, path, cond.switches,
                    cond.horizon, cond.allocation, cond.config_overrides)  # fmt: skip
            refs.append(evaluate.remote(*args))
            keys.append((cond, name, seed))
    runs = gather(refs, keys, "evaluation", console)
    measured = gather(credit_refs, list(range(len(credit_refs))), "credit", console)
    credit_rows = [row for i in range(len(credit_refs)) for row in measured[i]]
    scores = [RunScore(c.label, c.density, name, seed, r["metrics"])
              for (c, name, seed), r in runs.items()]  # fmt: skip
    results, paired = summarize(scores, preset.focus)
    for entry in results:
        if (key := (entry["policy"], entry["density"])) in picked:
            entry["allocation"] = picked[key]
        if key in options:
            entry["options"] = options[key]
    spread = between_runs(scores, run_labels(preset), preset.densities[0])
    for entry, seed in zip(spread["runs"], preset.train_seeds, strict=True):
        entry["seed"] = seed
    shown = {key: " ".join(chosen) for key, chosen in options.items() if chosen}
    table = markdown_tables(results, paired, picked, shown) + "\n" + markdown_runs(spread)
    given = f" --checkpoint {checkpoint}" if checkpoint is not None else ""
    given += "".join(f" --train-override {o}" for o in preset.train_overrides)
    command = f"esper bench quality --preset {preset.name}{given} --json {json_path} --force"
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
        "train_seeds": list(preset.train_seeds),
        "train_overrides": list(preset.train_overrides),
        "streams": [dataclasses.asdict(s) for s in preset.streams],
        "training": training,
        "selection": selection,
        "chosen": {chosen_key(r, v): path for (r, v), path in paths.items()},
        "allocation": choices.allocation,
        "options": choices.options,
        "between_runs": spread,
        "credit": {
            "checkpoint": paths[(0, "emrakul")],
            "jobs": [
                {
                    "stream": j[0].name,
                    "density": j[1],
                    "seed": j[2],
                    "surgeries": j[4],
                    "control": j[5],
                }
                for j in credit_jobs
            ],
            "summary": credit_summary(credit_rows) if credit_rows else None,
            "rows": credit_rows,
        },
        "wall_s": round(time.perf_counter() - started, 1),
        "diverged": [
            {"policy": c.label, "density": c.density, "stream": n, "seed": s}
            for (c, n, s), r in runs.items()
            if r["diverged"]
        ],
        "results": results,
        "paired": paired,
        "plasticity": plasticity_summary(task_end, preset.plasticity_stream),
        "breathing": breathing_summary(
            [
                {
                    "policy": c.label,
                    "density": c.density,
                    "stream": n,
                    "seed": s,
                    "breathing": r.get("breathing", math.nan),
                }
                for (c, n, s), r in runs.items()
            ]
        ),
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
