"""``esper bench quality``: train Emrakul, then score every surgeon on the drift suite.

The protocol (:mod:`esper.bench.quality_suite` holds the streams, seeds and conditions):

1. **Train** each Emrakul variant (the full policy and the trained ablations) with
   :func:`~esper.policies.training.train_policy` on one organism per (stream, density), once
   per training seed (run 0 trains every variant, the other runs the full policy), saving a
   checkpoint candidate every ``snapshot_every`` surgeries (and after the RigL-imitation warm
   start).
2. **Select** on the validation seeds, by mean online accuracy: each run's checkpoint of each
   variant, and each sparse baseline's layer allocation at each density (its runs start while
   Emrakul trains).
3. **Evaluate** every condition (baselines at their chosen allocation only) on every stream and
   evaluation seed, one prequential run each, scored by :func:`esper.analysis.quality.run_metrics`.
4. **Summarize** with BCa bootstrap intervals and paired differences
   (:func:`esper.analysis.quality.summarize`), the spread between training runs and what RL
   adds over each run's imitation warm start (:func:`esper.analysis.quality.between_runs`);
   write the JSON (with the ``training`` provenance of every run), the markdown tables (and the
   README's, between ``<!-- quality:begin -->`` and ``<!-- quality:end -->``) and the plot of
   the loss-of-plasticity reproduction.

Every run is a Ray task, so the same command fills a laptop's cores or, with ``--address``, a
cluster's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from esper.analysis.plots import plasticity_curves
from esper.analysis.quality import (
    RunScore,
    between_runs,
    markdown_runs,
    markdown_tables,
    plasticity_summary,
    run_metrics,
    summarize,
)
from esper.bench.credit import credit_summary, measure_stream
from esper.bench.harness import machine_info
from esper.bench.quality_suite import (
    PRESETS,
    RIGL_HORIZON,
    SWITCHES,
    TRAINED_ABLATIONS,
    Condition,
    QualityPreset,
    Stream,
    conditions,
    run_labels,
    trained_variants,
)
from esper.bench.tasks import gather, ray_session, remote
from esper.files import atomic_write_text, output_problem

if TYPE_CHECKING:
    from esper.config import EsperConfig
    from esper.policies.training import TrainResult

__all__ = ["README_BEGIN", "README_END", "TrainedVariant", "plot_plasticity", "run_quality"]

README_BEGIN = "<!-- quality:begin -->"
README_END = "<!-- quality:end -->"
FOCUS = "emrakul"


def _compose(overrides: Sequence[str]) -> Any:
    from esper.conf import compose

    return compose(list(overrides))


def _policy_overrides(
    stream: Stream,
    policy: str,
    density: float,
    horizon: float = RIGL_HORIZON,
    allocation: str | None = None,
) -> list[str]:
    extra = [f"policy={policy}", f"policy.density={density}"]
    if policy == "rigl":  # RigL stops updating the mask at T_end = horizon × the stream
        extra.append(f"policy.params.t_end={max(1, int(horizon * stream.steps))}")
    if allocation is not None:
        extra.append(f"workload.scalpel.distribution={allocation}")
    return [*stream.overrides, *extra]


def evaluate_run(
    stream: Stream,
    policy: str,
    density: float,
    seed: int,
    checkpoint: str | None = None,
    switches: tuple[tuple[str, Any], ...] = (),
    horizon: float = RIGL_HORIZON,
    allocation: str | None = None,
) -> dict[str, Any]:
    """One prequential run of ``policy`` (or the checkpoint, with the ablation ``switches``
    set on it) on ``stream``, under the layer ``allocation`` (``None``: the workload's): its
    metrics and its end-of-task accuracies. A host that diverges scores 0 on the steps it did
    not run."""
    from esper.analysis.quality import task_end_accuracies
    from esper.policies.base import dense_start, make_policy
    from esper.policies.checkpoints import load_policy
    from esper.policies.evaluation import evaluate_policy
    from esper.threads import one_thread
    from esper.workloads.factory import build_organism

    overrides = _policy_overrides(stream, policy, density, horizon, allocation)
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


@dataclass(frozen=True)
class TrainedVariant:
    """One Emrakul variant of one training run: what :func:`train_variant` returns.

    Attributes:
        run: Index of the training run (of ``preset.train_seeds``).
        seed: Its training seed.
        variant: ``emrakul`` or a trained ablation.
        directory: Where its checkpoint candidates are.
        snapshots: ``(surgeries, path)`` of every checkpoint candidate, in training order
            (surgeries 0: the imitation warm start, before any RL update).
        surgeries: Surgeries trained (RL, over all organisms).
        hyperparameters: What it trained with: learner and its parameters, the General's
            parameters, reward weights, ``control``, ``imitation``, ``rollout``, the budget and
            the policy's parameters.
    """

    run: int
    seed: int
    variant: str
    directory: str
    snapshots: tuple[tuple[int, str], ...]
    surgeries: int
    hyperparameters: dict[str, Any]


def _training_overrides(preset: QualityPreset, variant: str, run: int) -> list[str]:
    """The config overrides of one training: the preset's settings, then the variant's."""
    return [
        f"experiment.seed={preset.train_seeds[run]}",
        "policy=emrakul",
        f"policy.training.surgeries={preset.train_surgeries}",
        f"policy.training.rollout={preset.rollout}",
        f"policy.training.imitation={preset.imitation}",
        f"policy.training.control={preset.control}",
        f"policy.training.credit={preset.credit}",
        *TRAINED_ABLATIONS.get(variant, ()),
    ]


def train_variant(
    preset: QualityPreset, variant: str, out_dir: str, run: int = 0
) -> TrainedVariant:
    """Train one Emrakul variant in training run ``run`` on its organisms (seeded
    ``preset.organism_seeds(run)``), saving checkpoint candidates to
    ``<out_dir>/run<run>/<variant>/``."""
    from esper.policies.checkpoints import save_policy
    from esper.policies.training import train_policy

    cfg = _compose(_training_overrides(preset, variant, run))
    training = dataclasses.replace(cfg.policy.training,
                                   learner_params=dict(preset.learner_params))  # fmt: skip
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, training=training))
    organisms = [
        _compose([*_policy_overrides(s, "emrakul", d), f"experiment.seed={seed}"])
        for (s, d), seed in zip(
            product(preset.streams, preset.densities), preset.organism_seeds(run), strict=True
        )
    ]
    folder = Path(out_dir) / f"run{run}" / variant
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

    result = train_policy(cfg, organisms, on_episode=snapshot)
    return TrainedVariant(
        run, preset.train_seeds[run], variant, str(folder), tuple(saved),
        int(result.history[-1]["surgery"]), _hyperparameters(cfg, result),
    )  # fmt: skip


def _hyperparameters(cfg: EsperConfig, result: TrainResult) -> dict[str, Any]:
    from esper.config import to_plain

    training = cfg.policy.training
    return {
        "learner": training.learner,
        "learner_params": to_plain(dict(result.learner.specialists.params)),
        "general_params": to_plain(dict(training.general_params)),
        "reward": to_plain(cfg.reward),
        "control": training.control,
        "imitation": training.imitation,
        "rollout": training.rollout,
        "surgeries": training.surgeries,
        "policy_params": to_plain(dict(result.policy.params)),
    }


@dataclass(frozen=True)
class _Choice:
    """A checkpoint chosen on the validation seeds."""

    surgeries: int
    path: str
    validation: float


def _chosen_key(run: int, variant: str) -> str:
    """The name of a chosen checkpoint in the report: run 0's by variant, the others' with
    ``_run<r>``."""
    return variant if run == 0 else f"{variant}_run{run}"


def _select(
    preset: QualityPreset,
    trained: Mapping[tuple[int, str], TrainedVariant],
    console: Console,
) -> tuple[dict[tuple[int, str], _Choice], list[dict[str, Any]]]:
    """Each run's checkpoint of each variant, chosen on the validation seeds (an RL one: never
    the imitation snapshot, which is ``(run, "imitation_only")``); and the table of every
    candidate's validation score."""
    evaluate = remote(evaluate_run)
    refs, keys = [], []
    for (run, variant), t in trained.items():
        for (surgeries, path), stream, seed in product(
            t.snapshots, preset.streams, preset.validation_seeds
        ):
            refs.append(evaluate.remote(stream, "emrakul", preset.densities[0], seed, path,
                                        SWITCHES.get(variant, ())))  # fmt: skip
            keys.append((run, variant, surgeries, stream.name, seed))
    results = gather(refs, keys, "checkpoint selection (validation seeds)", console)
    table: list[dict[str, Any]] = []
    chosen: dict[tuple[int, str], _Choice] = {}
    for (run, variant), t in trained.items():
        best = None
        for surgeries, path in t.snapshots:
            scores = [v["metrics"]["online_accuracy"] for k, v in results.items()
                      if k[:3] == (run, variant, surgeries)]  # fmt: skip
            choice = _Choice(surgeries, path, float(np.mean(scores)))
            table.append({"run": run, "variant": variant, "surgeries": surgeries,
                          "validation": choice.validation})  # fmt: skip
            if surgeries > 0 and (best is None or choice.validation > best.validation):
                best = choice
            if surgeries == 0 and variant == "emrakul":
                chosen[(run, "imitation_only")] = choice
        assert best is not None, f"run {run}'s {variant} saved no checkpoint after RL"
        chosen[(run, variant)] = best
        console.print(f"run {run} {variant}: checkpoint after {best.surgeries} surgeries "
                      f"(validation {best.validation:.3f})")  # fmt: skip
    return chosen, table


def _baselines(preset: QualityPreset) -> list[Condition]:
    """The sparse baseline conditions, one per allocation the preset tries."""
    return [c for c in conditions(preset) if c.allocation is not None]


def _submit_allocation_runs(preset: QualityPreset) -> tuple[list[Any], list[Any]]:
    """Start the validation runs of every allocation candidate; returns their refs and keys."""
    evaluate = remote(evaluate_run)
    streams = {s.name: s for s in preset.streams}
    refs, keys = [], []
    candidates = _baselines(preset) if len(preset.allocations) > 1 else []
    for cond, seed in product(candidates, preset.validation_seeds):
        for name in cond.streams:
            refs.append(evaluate.remote(streams[name], cond.policy, cond.density, seed, None,
                                        cond.switches, cond.horizon, cond.allocation))  # fmt: skip
            keys.append((cond.label, cond.density, cond.allocation, name, seed))
    return refs, keys


def _choose_allocations(
    preset: QualityPreset, results: Mapping[Any, dict[str, Any]], console: Console
) -> list[dict[str, Any]]:
    """Per (baseline, density), each allocation's mean online accuracy on the validation seeds
    and the best (the first of ``preset.allocations`` on a tie); a preset with one allocation
    has nothing to choose (``validation`` empty)."""
    tried = preset.allocations if len(preset.allocations) > 1 else ()
    rows: list[dict[str, Any]] = []
    for label, density in dict.fromkeys((c.label, c.density) for c in _baselines(preset)):
        validation = {
            allocation: float(np.mean([v["metrics"]["online_accuracy"] for k, v in results.items()
                                       if k[:3] == (label, density, allocation)]))
            for allocation in tried
        }  # fmt: skip
        best = max(validation, key=validation.__getitem__) if tried else preset.allocations[0]
        rows.append({"policy": label, "density": density, "validation": validation,
                     "chosen": best})  # fmt: skip
    if len(preset.allocations) > 1:
        picks = (f"{r['policy']} at {r['density']:g}: {r['chosen']}" for r in rows)
        console.print("allocations (validation seeds): " + ", ".join(picks))
    return rows


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


def _check_configs(preset: QualityPreset) -> None:
    """Compose every training config and every allocation once, so a bad setting (an unknown
    ``control``, blind group or allocation) fails before any work."""
    for run, variant in trained_variants(preset):
        _compose(_training_overrides(preset, variant, run))
    for allocation in preset.allocations:
        _compose(_policy_overrides(preset.streams[0], "static", preset.densities[0],
                                   allocation=allocation))  # fmt: skip


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

    Emrakul's checkpoint candidates go to
    ``<storage>/quality-<preset>-<UTC time>/run<r>/<variant>/``; the JSON names the chosen ones.

    Raises:
        KeyError: an unknown preset.
        ValueError: an output path that cannot be written or a setting the config refuses
            (checked before any work).
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
    _check_configs(preset)
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
    jobs = trained_variants(preset)
    console.print(f"[bold]esper bench quality[/bold] {preset.name}: training "
                  + ", ".join(f"{v} (run {r})" for r, v in jobs))  # fmt: skip
    train_refs = [train.remote(preset, v, str(out_dir), r) for r, v in jobs]
    allocation_refs, allocation_keys = _submit_allocation_runs(preset)  # while Emrakul trains
    done = gather(train_refs, jobs, "training Emrakul", console)
    trained = {job: done[job] for job in jobs}  # in training order, not finishing order
    chosen, selection = _select(preset, trained, console)
    allocation = _choose_allocations(
        preset,
        gather(allocation_refs, allocation_keys, "baseline allocations (validation seeds)",
               console),
        console,
    )  # fmt: skip
    picked = {(r["policy"], r["density"]): r["chosen"] for r in allocation}
    credit_jobs = credit_setup(preset, chosen[(0, "emrakul")].path)
    credit_refs = [remote(measure_stream).remote(*job) for job in credit_jobs]
    evaluated = [
        c
        for c in conditions(preset)
        if c.allocation is None or picked[(c.label, c.density)] == c.allocation
    ]
    evaluate = remote(evaluate_run)
    streams = {s.name: s for s in preset.streams}
    refs, keys = [], []
    for cond, seed in product(evaluated, preset.seeds):
        for name in cond.streams:
            path = chosen[(cond.run, cond.variant)].path if cond.variant else None
            args = (streams[name], cond.policy, cond.density, seed, path, cond.switches,
                    cond.horizon, cond.allocation)  # fmt: skip
            refs.append(evaluate.remote(*args))
            keys.append((cond, name, seed))
    runs = gather(refs, keys, "evaluation", console)
    measured = gather(credit_refs, list(range(len(credit_refs))), "credit", console)
    credit_rows = [row for i in range(len(credit_refs)) for row in measured[i]]
    scores = [RunScore(c.label, c.density, name, seed, r["metrics"])
              for (c, name, seed), r in runs.items()]  # fmt: skip
    results, paired = summarize(scores, FOCUS)
    for entry in results:
        if (key := (entry["policy"], entry["density"])) in picked:
            entry["allocation"] = picked[key]
    spread = between_runs(scores, run_labels(preset), preset.densities[0])
    for entry, seed in zip(spread["runs"], preset.train_seeds, strict=True):
        entry["seed"] = seed
    table = markdown_tables(results, paired, picked) + "\n" + markdown_runs(spread)
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
        "train_seeds": list(preset.train_seeds),
        "streams": [dataclasses.asdict(s) for s in preset.streams],
        "training": _training_section(preset, out_dir, trained, chosen, selection),
        "selection": selection,
        "chosen": {_chosen_key(r, v): c.path for (r, v), c in chosen.items()},
        "allocation": allocation,
        "between_runs": spread,
        "credit": {
            "checkpoint": chosen[(0, "emrakul")].path,
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


def _training_section(
    preset: QualityPreset,
    out_dir: Path,
    trained: Mapping[tuple[int, str], TrainedVariant],
    chosen: Mapping[tuple[int, str], _Choice],
    selection: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The ``training`` section of the report: per run its seeds and directory and, per
    variant, the validation learning curve of its candidates (``imitation`` marks the warm
    start's snapshot, surgeries 0), the chosen checkpoint, the surgeries trained and the
    hyperparameters."""
    section = []
    for run, seed in enumerate(preset.train_seeds):
        variants = {}
        for (r, variant), t in trained.items():
            if r != run:
                continue
            curve = [
                {
                    "surgeries": row["surgeries"],
                    "validation": row["validation"],
                    "imitation": row["surgeries"] == 0,
                }
                for row in selection
                if (row["run"], row["variant"]) == (run, variant)
            ]
            best = chosen[(run, variant)]
            variants[variant] = {
                "directory": t.directory,
                "curve": curve,
                "imitation_validation": next(
                    (c["validation"] for c in curve if c["imitation"]), None
                ),
                "chosen": {
                    "surgeries": best.surgeries,
                    "path": best.path,
                    "validation": best.validation,
                },
                "surgeries_trained": t.surgeries,
                "hyperparameters": t.hyperparameters,
            }
        section.append({
            "run": run, "seed": seed, "organism_seeds": list(preset.organism_seeds(run)),
            "directory": str(out_dir / f"run{run}"), "variants": variants,
        })  # fmt: skip
    return section


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
