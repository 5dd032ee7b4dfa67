"""``esper bench held-out``: Emrakul on streams and hosts that no design decision ever saw.

The quality suite (:data:`esper.bench.quality_suite.SMALL_STREAMS`) holds its *seeds* out, not
its *streams*: the same six streams guided every design decision, trained Emrakul and chose
its checkpoint. This benchmark scores a trained checkpoint on streams built from drift kinds
or schedules that no suite stream uses (:func:`novelty` says which, read from the composed
configs; a stream with nothing new is refused), and on host shapes other than the training
host (the default 128×128 MLP on flattened inputs): a CNN and a 256×256 MLP.

Conditions, at each density: ``emrakul`` (the checkpoint given), ``rigl`` (``T_end`` at 75% of
the stream, as the suite), ``rigl_continual`` (``T_end`` = 10 × the stream) and ``set``; ``dense``
once. Every sparse surgeon runs the workload's layer allocation (ERK, the one Emrakul trained
with): nothing is selected on held-out streams. Evaluation seeds (2000…) are disjoint from
every quality preset's training, organism, validation and evaluation seeds. Each (condition,
stream, host, seed) is one prequential run (:func:`esper.bench.quality_evaluation.evaluate_run`)
as a Ray task; each host gets its own :func:`esper.analysis.quality.summarize` (per-stream
rows, suite rows over the held-out streams, and Emrakul − each baseline paired by stream and
seed) and its own section of the markdown table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

from rich.console import Console

from esper.analysis.quality import SUITE, RunScore, summarize
from esper.analysis.quality_tables import markdown_tables
from esper.bench import quality_presets
from esper.bench.harness import machine_info
from esper.bench.quality_evaluation import compose_config, evaluate_run, policy_overrides
from esper.bench.quality_suite import CONTINUAL_HORIZON, RIGL_HORIZON, Condition, Stream
from esper.bench.tasks import gather, pick_preset, ray_session, remote
from esper.files import atomic_write_text, output_problem

__all__ = [
    "BASELINES",
    "HOSTS",
    "PRESETS",
    "HeldOutPreset",
    "HeldOutStream",
    "HostShape",
    "conditions",
    "held_out_streams",
    "novelty",
    "on_host",
    "run_held_out",
    "suite_seeds",
]

FOCUS = "emrakul"


@dataclass(frozen=True)
class HeldOutStream:
    """A stream of the held-out table.

    Attributes:
        stream: Its name, config overrides and length (as a suite stream).
        why: What no suite stream has, in words (:func:`novelty` checks the kinds).
    """

    stream: Stream
    why: str


_RECIPES = (
    # name, what no suite stream has, workload preset (its source), drifts, schedule, params
    ("rotated_gradual", "digits rotated by 45° a task (a drift only the platform's demo and "
     "tests use, never Emrakul's training, selection or the suite), each rotation blended in "
     "gradually: no suite stream blends its tasks", "digits_rotated",
     "[{name:rotate,params:{degrees_per_task:45}}]", "gradual", ",window:{third}"),
    ("affine_recurring", "digits under random affine warps (rotation, scale, shear, shift), a "
     "drift nothing used, cycling through three distributions A→B→C→A→B (the suite's "
     "recurring stream alternates two input permutations)", "digits_permuted",
     "[{name:affine}]", "recurring", ",pattern:[0,1,2]"),
    ("mnist1d_labels_gradual", "MNIST-1D relabelled at each task (the suite permutes only "
     "digits' labels and only shifts MNIST-1D's covariates), blended in gradually",
     "mnist1d_permuted", "[{name:permute_labels}]", "gradual", ",window:{third}"),
    ("digits_noisy_covariate", "bursts of input noise (a drift nothing used) over a covariate "
     "shift of digits (the suite shifts only MNIST-1D's), abrupt tasks", "digits_permuted",
     "[{name:covariate_shift,params:{shift:0.5}},{name:noise_burst,params:{sigma:0.5}}]",
     "abrupt", ""),
)  # fmt: skip


def held_out_streams(tasks: int = 5, task_length: int = 300) -> tuple[HeldOutStream, ...]:
    """The held-out streams, ``tasks`` × ``task_length`` steps each (gradual blends span a
    third of a task). The suite uses digits, MNIST-1D and the regression source; input and
    label permutations, class-incremental splits and covariate shift; abrupt and recurring
    schedules. ``gaussian_mixture``, the one source it never used, has flat inputs a CNN
    cannot take, so every stream here is on digits or MNIST-1D and new in drift or schedule."""
    out = []
    for name, why, preset, drifts, schedule, params in _RECIPES:
        extra = params.format(third=task_length // 3)
        overrides = (f"workload={preset}", f"workload.num_tasks={tasks}",
                     f"workload.drifts={drifts}", f"workload.schedule.name={schedule}",
                     f"workload.schedule.params={{task_length:{task_length}{extra}}}")  # fmt: skip
        out.append(HeldOutStream(Stream(name, overrides, tasks * task_length), why))
    return tuple(out)


@dataclass(frozen=True)
class HostShape:
    """A host network of the table: the config overrides that give it.

    Attributes:
        name: Name of the table's section.
        overrides: Config overrides, after the stream's.
        about: What it is, in words.
    """

    name: str
    overrides: tuple[str, ...]
    about: str


HOSTS = {
    "mlp": HostShape("mlp", (), "the training host: an MLP of 128×128 on flattened inputs"),
    "cnn": HostShape(
        "cnn",
        ("workload.host.name=cnn",),
        "a CNN (conv 16 → 32 with max-pooling, then 64 → head): 2-D on digits, 1-D on MNIST-1D",
    ),
    "wide_mlp": HostShape(
        "wide_mlp", ("workload.host.params={hidden:[256,256]}",), "an MLP of 256×256"
    ),
}
"""The host shapes (registered hosts of :data:`esper.workloads.hosts.HOSTS`, the CNN 2-D or 1-D
as the stream's inputs are): Emrakul trained on ``mlp`` only."""

BASELINES = {
    "rigl": ("rigl", RIGL_HORIZON),
    "rigl_continual": ("rigl", CONTINUAL_HORIZON),
    "set": ("set", RIGL_HORIZON),
    "static": ("static", RIGL_HORIZON),
    "random": ("random", RIGL_HORIZON),
}
"""Label → (policy, RigL's ``T_end`` as a fraction of the stream; read by RigL only)."""


def suite_seeds() -> set[int]:
    """Every seed a quality preset uses: training runs and their organisms, validation and
    evaluation seeds."""
    used: set[int] = set()
    for preset in quality_presets.PRESETS.values():
        used |= {*preset.seeds, *preset.validation_seeds}
        for run, seed in enumerate(preset.train_seeds):
            used |= {seed, *preset.organism_seeds(run)}
    return used


@dataclass(frozen=True)
class HeldOutPreset:
    """One held-out benchmark.

    Attributes:
        name: ``small`` or ``tiny``.
        streams: The held-out streams.
        hosts: Names of :data:`HOSTS`.
        densities: Density budgets of every sparse condition.
        baselines: Labels of :data:`BASELINES`; ``emrakul`` and ``dense`` always run.
        seeds: Evaluation seeds, disjoint from every seed of the quality presets.

    Raises:
        ValueError: an unknown host or baseline, no seeds, or a seed the suite uses.
    """

    name: str
    streams: tuple[HeldOutStream, ...]
    hosts: tuple[str, ...] = tuple(HOSTS)
    densities: tuple[float, ...] = (0.1, 0.05)
    baselines: tuple[str, ...] = ("rigl", "rigl_continual", "set")
    seeds: tuple[int, ...] = (2000, 2001, 2002, 2003, 2004)

    def __post_init__(self) -> None:
        for kind, names, valid in (("host", self.hosts, HOSTS),
                                   ("baseline", self.baselines, BASELINES)):  # fmt: skip
            if unknown := [n for n in names if n not in valid]:
                raise ValueError(
                    f"preset {self.name!r}: unknown {kind}s {unknown}; valid: {', '.join(valid)}"
                )
        if not self.seeds:
            raise ValueError(f"preset {self.name!r}: no seeds; give at least one")
        if shared := sorted(set(self.seeds) & suite_seeds()):
            raise ValueError(
                f"preset {self.name!r}: seeds {shared} are seeds of the quality "
                "suite; held-out seeds start at 2000"
            )


PRESETS = {
    "small": HeldOutPreset("small", held_out_streams()),
    "tiny": HeldOutPreset(
        "tiny", held_out_streams(2, 100), densities=(0.1,), baselines=("rigl",), seeds=(2000, 2001)
    ),
}
"""``small``: 4 streams × 3 hosts × 9 conditions × 5 seeds = 540 runs of 1500 steps (0.81 M
SGD steps). Measured in CPU time on the 2-core machine, a 1500-step run on digits costs
≈ 1.4 core-s on the MLP, ≈ 3.0 on the CNN and ≈ 1.8 on the wide MLP (Emrakul's ≈ 10% more
than RigL's); a run on MNIST-1D adds ≈ 2.2 core-s generating the source; a Ray task takes
≈ 0.7 s to start. Per seed ≈ 280 core-s of runs and ≈ 75 of starts: about 1800 core-s in all,
≈ 16 minutes on 2 idle cores (about 20 with the first imports of each worker and a little
load beside it; twice that if another benchmark holds both cores). ``tiny``: 36 runs of 200
steps, a smoke run (105 s beside a benchmark holding both cores)."""


def conditions(preset: HeldOutPreset) -> list[Condition]:
    """``dense`` once, then at each density every baseline and ``emrakul`` (its checkpoint is
    given at run time), on every stream."""
    every = tuple(s.stream.name for s in preset.streams)
    out = [Condition("dense", "dense", 1.0, every)]
    for density in preset.densities:
        for label in preset.baselines:
            policy, horizon = BASELINES[label]
            out.append(Condition(label, policy, density, every, horizon=horizon))
        out.append(Condition(FOCUS, FOCUS, density, every, variant=FOCUS))
    return out


def on_host(stream: Stream, host: HostShape) -> Stream:
    """``stream`` with ``host``'s overrides after its own."""
    return dataclasses.replace(stream, overrides=(*stream.overrides, *host.overrides))


@functools.cache
def _kinds(overrides: tuple[str, ...]) -> dict[str, frozenset[str]]:
    workload = compose_config(overrides).workload
    return {
        "source": frozenset({workload.dataset.name}),
        "drift": frozenset(d.name for d in workload.drifts),
        "schedule": frozenset({workload.schedule.name}),
    }


def novelty(stream: Stream) -> dict[str, list[str]]:
    """The source, drift and schedule kinds of ``stream`` that no stream of any quality preset
    uses (``{}``: nothing is held out)."""
    seen: dict[str, set[str]] = {"source": set(), "drift": set(), "schedule": set()}
    suite = {s.overrides: s for p in quality_presets.PRESETS.values() for s in p.streams}
    for overrides in suite:
        for part, names in _kinds(overrides).items():
            seen[part] |= names
    own = _kinds(stream.overrides)
    return {part: sorted(own[part] - seen[part]) for part in own if own[part] - seen[part]}


def _check(preset: HeldOutPreset, checkpoint: Path, *outputs: Path) -> dict[str, Any]:
    """Refuse, before any work, an output that cannot be written, a missing or damaged
    checkpoint, a stream with nothing held out or a (stream, host) the config refuses; returns
    each stream's :func:`novelty`."""
    from esper.policies.checkpoints import load_policy
    from esper.workloads.factory import build_organism

    for path in outputs:
        if (problem := output_problem(path)) is not None:
            raise ValueError(f"cannot write {path}: {problem}")
    if not checkpoint.is_file():
        raise ValueError(
            f"--checkpoint {checkpoint} does not exist (train one with esper bench "
            "quality, or pass benchmarks/results/quality-emrakul.pt)"
        )
    load_policy(checkpoint)  # a damaged file: CheckpointError
    found = {}
    for held in preset.streams:
        found[held.stream.name] = novelty(held.stream)
        if not found[held.stream.name]:
            raise ValueError(
                f"stream {held.stream.name!r} uses only sources, drifts and "
                "schedules of the quality suite: nothing about it is held out"
            )
        for name in preset.hosts:
            overrides = policy_overrides(on_host(held.stream, HOSTS[name]), "static", 0.1)
            build_organism(compose_config(overrides))  # the host takes the stream's inputs
    return found


def run_held_out(
    preset_name: str | HeldOutPreset,
    checkpoint: Path,
    json_path: Path,
    address: str | None = None,
    num_cpus: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Score ``checkpoint`` and the baselines on the held-out streams and hosts; write the
    JSON at ``json_path`` and the markdown table beside it (``.md``).

    Raises:
        ValueError: an unknown preset, an output that cannot be written, a missing checkpoint
            or a stream with nothing held out (all before any work).
        esper.checkpoint.CheckpointError: a damaged checkpoint.
    """
    console = console or Console()
    preset = pick_preset(preset_name, PRESETS, "held-out")
    markdown_path = json_path.with_suffix(".md")
    found = _check(preset, checkpoint, json_path, markdown_path)
    started = time.perf_counter()
    path = str(checkpoint.resolve())
    with ray_session(address, num_cpus):
        evaluate = remote(evaluate_run)
        refs, keys = [], []
        jobs = product(conditions(preset), preset.hosts, preset.streams, preset.seeds)
        for cond, name, held, seed in jobs:
            args = (on_host(held.stream, HOSTS[name]), cond.policy, cond.density, seed,
                    path if cond.variant else None, (), cond.horizon)  # fmt: skip
            refs.append(evaluate.remote(*args))
            keys.append((cond.label, cond.density, name, held.stream.name, seed))
        console.print(f"[bold]esper bench held-out[/bold] {preset.name}: {len(refs)} runs")
        runs = gather(refs, keys, "held-out evaluation", console)
    command = (f"esper bench held-out --checkpoint {checkpoint} --preset {preset.name} "
               f"--json {json_path} --force")  # fmt: skip
    report = _report(preset, runs, found)
    report.update(machine=machine_info(), command=command, checkpoint=str(checkpoint),
                  wall_s=round(time.perf_counter() - started, 1))  # fmt: skip
    table = _markdown(report)
    atomic_write_text(json_path, json.dumps(report, indent=1) + "\n")
    atomic_write_text(markdown_path, table)
    console.print(table)
    console.print(f"results written to {json_path} and {markdown_path} in {report['wall_s']:.0f} s")
    return report


def _report(
    preset: HeldOutPreset, runs: dict[tuple[Any, ...], dict[str, Any]], found: dict[str, Any]
) -> dict[str, Any]:
    """The report's data: the preset, the streams (with what is held out), the hosts, per
    host the summary, and every run."""
    hosts = {}
    for name in preset.hosts:
        scores = [RunScore(label, d, s, seed, r["metrics"])
                  for (label, d, h, s, seed), r in runs.items() if h == name]  # fmt: skip
        results, paired = summarize(scores, FOCUS)
        hosts[name] = {"about": HOSTS[name].about, "overrides": list(HOSTS[name].overrides),
                       "results": results, "paired": paired}  # fmt: skip
    return {
        "preset": preset.name,
        "seeds": list(preset.seeds),
        "densities": list(preset.densities),
        "baselines": list(preset.baselines),
        "streams": [
            {
                "name": s.stream.name,
                "overrides": list(s.stream.overrides),
                "steps": s.stream.steps,
                "why": s.why,
                "held_out": found[s.stream.name],
            }
            for s in preset.streams
        ],
        "hosts": hosts,
        "diverged": [
            dict(zip(("policy", "density", "host", "stream", "seed"), k, strict=True))
            for k, r in runs.items()
            if r["diverged"]
        ],
        "runs": [
            {"host": k[2], **RunScore(k[0], k[1], k[3], k[4], runs[k]["metrics"]).to_json()}
            for k in sorted(runs)
        ],
    }


def _markdown(report: dict[str, Any]) -> str:
    """One section per host: the suite rows and paired differences of
    :func:`esper.analysis.quality_tables.markdown_tables`, then each condition's mean online
    accuracy per stream."""
    streams = [s["name"] for s in report["streams"]]
    lines = [
        "# Held-out streams and hosts",
        "",
        f"Checkpoint `{report['checkpoint']}`; seeds {report['seeds']}; reproduce with "
        f"`{report['command']}`. Streams (what no suite stream has):",
        "",
        *(f"- `{s['name']}`: {s['why']}." for s in report["streams"]),
    ]
    for name, host in report["hosts"].items():
        lines += ["", f"## {name}: {host['about']}", "",
                  markdown_tables(host["results"], host["paired"]).rstrip(), "",
                  "| policy | density | " + " | ".join(streams) + " |",
                  "|---|---|" + "---|" * len(streams)]  # fmt: skip
        cells: dict[tuple[str, float], dict[str, str]] = {}
        for r in host["results"]:
            if r["stream"] != SUITE and (mean := r["online_accuracy"]["mean"]) is not None:
                cells.setdefault((r["policy"], r["density"]), {})[r["stream"]] = f"{mean:.3f}"
        for (policy, density), row in sorted(cells.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
            lines.append(
                f"| {policy} | {density:g} | " + " | ".join(row.get(s, "—") for s in streams) + " |"
            )
    return "\n".join(lines) + "\n"
