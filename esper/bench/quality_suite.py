"""The protocol of ``esper bench quality``: what a preset is and the conditions it expands to
(streams: :mod:`esper.bench.quality_streams`; the presets themselves:
:mod:`esper.bench.quality_presets`).

A :class:`QualityPreset` names the streams, densities, surgeons, plasticity anchors
(:mod:`esper.bench.quality_anchors`) and seeds of one quality benchmark; :func:`conditions`
expands it into the evaluations to run. Three disjoint seed sets keep the protocol honest:
Emrakul trains on streams seeded from ``train_seeds`` (one independent training run per seed,
so the table can show how much a result owes to the run), every choice (a checkpoint, a
baseline's layer allocation, an anchor's options) is made on ``validation_seeds``, and
every number of the table comes from ``seeds``, which neither training nor selection ever saw.
A seed draws the stream's permutations, rotations, class order and noise, so the three sets
also differ in drift orderings. The preset refuses seeds that overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from esper.bench.quality_anchors import ANCHORS
from esper.bench.quality_condition import CONTINUAL_HORIZON, RIGL_HORIZON, Condition
from esper.bench.quality_streams import (
    SMALL_STREAMS,
    Stream,
)
from esper.bench.quality_variants import (
    ABLATIONS,
    EVERY_DENSITY,
    SWITCHES,
    TRAINED_ABLATIONS,
    WARM_START_ABLATIONS,
)

__all__ = [
    "ABLATIONS", "ALLOCATIONS", "CONTINUAL_HORIZON", "EVERY_DENSITY", "RIGL_HORIZON",
    "SMALL_STREAMS", "SPARSE_BASELINES", "SWITCHES", "TRAINED_ABLATIONS", "TRAINERS",
    "WARM_START_ABLATIONS", "Condition", "QualityPreset", "Stream", "conditions", "run_labels",
    "trained_variants",
]  # fmt: skip


TRAINERS = ("in_process", "sweep")
"""How a preset trains its full policy (``QualityPreset.trainer``): ``in_process``
(:mod:`esper.bench.quality_training`, after a RigL-imitation warm start) or ``sweep`` (a PBT
sweep, :mod:`esper.bench.quality_sweep`); the trained ablations always train in process."""

SPARSE_BASELINES = ("static", "random", "set", "rigl", "gmp", "cbp", "redo")
"""The sparse baselines of a preset unless it names its own."""

ALLOCATIONS = ("uniform", "erk")
"""Layer allocations a sparse baseline runs under (``workload.scalpel.distribution``, the names
of :data:`esper.workloads.scalpel.allocation.DISTRIBUTIONS`): each baseline is scored at the one
its validation runs favour, so Emrakul is compared with every baseline at its best."""


@dataclass(frozen=True)
class QualityPreset:
    """One quality benchmark.

    Attributes:
        name: Its key in :data:`PRESETS`.
        streams: The drift suite.
        densities: Density budgets every sparse surgeon runs at.
        baselines: Sparse baselines (``esper.policies.POLICIES`` names); dense runs once.
        anchors: Plasticity anchors (:data:`~esper.bench.quality_anchors.ANCHORS` names):
            optimizer and host options on a surgeon, at every density or once dense.
        seeds: Evaluation seeds (one run per condition, stream and seed).
        validation_seeds: Seeds of every selection (checkpoints, baselines' allocations).
        train_seeds: One independent training run of Emrakul per seed. Run ``r`` seeds its
            policy and learners with ``train_seeds[r]`` and its organisms (one per stream ×
            density) with the next seeds (:meth:`organism_seeds`). Run 0 trains every variant
            and gives the headline rows; the others train the full policy only, to measure the
            spread between runs.
        train_surgeries: Emrakul's training budget, in surgeries over all organisms.
        rollout: Surgeries per training episode.
        imitation: RigL-demonstration surgeries per training organism (warm start).
        control: ``policy.training.control`` of the training runs: ``none`` (raw rewards) or
            the surgeon of each organism's control twin (``rigl``: the reward's accuracy term
            is measured against a RigL twin on the same steps; :mod:`esper.policies.credit`).
        credit: ``policy.training.credit`` of the training runs (``level`` or ``change``).
        credit_surgeries: Surgeries per training stream of the credit measurement
            (:mod:`esper.bench.credit`, with run 0's chosen checkpoint, on training seeds); 0
            skips it.
        snapshot_every: Surgeries between checkpoint candidates.
        ablations: Emrakul variants from :data:`ABLATIONS`, at the first density.
        allocations: Layer allocations (:data:`ALLOCATIONS`) each sparse baseline is tried
            under on the validation seeds; one entry skips that selection.
        plasticity_stream: Stream where dense backprop and dense CBP run for the loss-of-
            plasticity reproduction.
        learner_params: Keyword arguments of the Specialists' learner (a sweep explores
            ``lr`` around this one).
        trainer: How the full policy trains (:data:`TRAINERS`); a sweep trains
            ``train_surgeries`` over all its members, each starting from the same imitation
            warm start.
        sweep_members: Members of the sweep's population (``trainer="sweep"``).
        sweep_overrides: Config overrides appended to the sweep's (``cluster.replica_cpus`` …).
        train_overrides: Config overrides appended to every in-process training's config and
            to its organisms' (e.g. ``policy.params.specialist_log_std=-1.5``, or
            ``reward.delta=0`` for the training organisms' rewards): a training lever tried
            without a new preset (``--train-override``). Evaluation runs never see them.
        focus: The condition every paired difference is taken from (``emrakul``, or a variant's
            label such as ``emrakul_elastic``).

    Raises:
        ValueError: overlapping seed sets, an empty or unknown allocation list, an unknown
            anchor or trainer, a warm-start ablation without imitation, or a sweep with fewer
            than 2 members, no ``lr`` or a ``no_imitation`` ablation.
    """

    name: str
    streams: tuple[Stream, ...]
    densities: tuple[float, ...] = (0.1, 0.05)
    baselines: tuple[str, ...] = SPARSE_BASELINES
    anchors: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004)
    validation_seeds: tuple[int, ...] = (500,)
    train_seeds: tuple[int, ...] = (0,)
    train_surgeries: int = 1800
    rollout: int = 16
    imitation: int = 24
    control: str = "rigl"
    credit: str = "change"
    credit_surgeries: int = 40
    snapshot_every: int = 300
    ablations: tuple[str, ...] = (
        "no_general", "no_imitation", "imitation_only", "general_rigl", "blind_gradient",
        "blind_topology",
    )  # fmt: skip
    allocations: tuple[str, ...] = ALLOCATIONS
    plasticity_stream: str = "permuted50"
    learner_params: dict[str, float] = field(default_factory=lambda: {"lr": 1e-4})
    trainer: str = "in_process"
    sweep_members: int = 4
    sweep_overrides: tuple[str, ...] = ()
    focus: str = "emrakul"
    train_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.allocations or set(self.allocations) - set(ALLOCATIONS):
            raise ValueError(
                f"preset {self.name!r}: allocations={self.allocations} must name one or more of "
                f"{', '.join(ALLOCATIONS)}"
            )
        if unknown := [a for a in self.anchors if a not in ANCHORS]:
            raise ValueError(f"preset {self.name!r}: unknown anchors {unknown}; valid: "
                             f"{', '.join(ANCHORS)}")  # fmt: skip
        if self.trainer not in TRAINERS:
            raise ValueError(f"preset {self.name!r}: unknown trainer {self.trainer!r}; valid: "
                             f"{', '.join(TRAINERS)}")  # fmt: skip
        warm = [a for a in self.ablations if a in WARM_START_ABLATIONS]
        if warm and not self.imitation:
            raise ValueError(f"preset {self.name!r}: the ablations {warm} ablate a warm start "
                             "and imitation=0 has none")  # fmt: skip
        if self.trainer == "sweep" and (self.sweep_members < 2 or "lr" not in self.learner_params
                                        or "no_imitation" in self.ablations):  # fmt: skip
            raise ValueError(
                f"preset {self.name!r}: trainer='sweep' needs sweep_members ≥ 2 (got "
                f"{self.sweep_members}), an lr in learner_params (got {self.learner_params}) and "
                "no no_imitation ablation (it trains in process: against a sweep-trained policy "
                "it would ablate the trainer as well as the warm start)"
            )
        _check_seeds(self)

    def organism_seeds(self, run: int) -> tuple[int, ...]:
        """Seeds of training run ``run``'s organisms, one per (stream, density) in that order:
        ``train_seeds[run] + 1``, ``+ 2``, …"""
        first = self.train_seeds[run] + 1
        return tuple(range(first, first + len(self.streams) * len(self.densities)))


def _check_seeds(preset: QualityPreset) -> None:
    """Refuse a training run whose seeds (its own and its organisms') meet another run's, a
    validation seed or an evaluation seed, and validation seeds that are evaluation seeds."""
    name = preset.name
    if not preset.train_seeds:
        raise ValueError(f"preset {name!r}: train_seeds is empty; give at least one seed")
    held_out = {"validation": set(preset.validation_seeds), "evaluation": set(preset.seeds)}
    if both := sorted(held_out["validation"] & held_out["evaluation"]):
        raise ValueError(
            f"preset {name!r}: seeds {both} are both validation and evaluation seeds; "
            "selection must never see an evaluation seed"
        )
    owner: dict[int, int] = {}
    for run, seed in enumerate(preset.train_seeds):
        block = (seed, *preset.organism_seeds(run))
        for s in block:
            if s in owner:
                raise ValueError(
                    f"preset {name!r}: training runs {owner[s]} and {run} both use seed {s} "
                    f"(a run takes its seed and the {len(block) - 1} after it); space "
                    f"train_seeds at least {len(block)} apart"
                )
            for kind, seeds in held_out.items():
                if s in seeds:
                    raise ValueError(
                        f"preset {name!r}: training run {run} (seeds {seed}…{block[-1]}) uses "
                        f"{kind} seed {s}; move train_seeds or the {kind} seeds apart"
                    )
            owner[s] = run


def trained_variants(preset: QualityPreset) -> list[tuple[int, str]]:
    """``(run, variant)`` of every training: run 0 trains the full policy (``emrakul``) and
    the preset's trained ablations, every other run the full policy only."""
    first = [(0, "emrakul"), *((0, a) for a in preset.ablations if a in TRAINED_ABLATIONS)]
    return first + [(run, "emrakul") for run in range(1, len(preset.train_seeds))]


def run_labels(preset: QualityPreset) -> list[tuple[str, str]]:
    """Per training run, the labels of its full policy and of its imitation-only snapshot at
    the first density: run 0's are the headline ``emrakul`` and ``emrakul_imitation_only``,
    run ``r``'s ``emrakul_run<r>`` and ``emrakul_imitation_only_run<r>``."""
    suffixes = ["", *(f"_run{r}" for r in range(1, len(preset.train_seeds)))]
    return [(f"emrakul{s}", f"emrakul_imitation_only{s}") for s in suffixes]


def conditions(preset: QualityPreset) -> list[Condition]:
    """Every condition of ``preset``: dense (and the dense anchors) once; at each density each
    baseline once per allocation, each sparse anchor once per allocation and option set, and
    Emrakul (run 0); the ablations at the first density; with several
    training runs, each other run's full policy and imitation-only snapshot at the first
    density (and run 0's imitation-only snapshot); dense CBP on the plasticity stream.

    Raises:
        KeyError: an unknown ablation.
    """
    every = tuple(s.name for s in preset.streams)
    out = [Condition("dense", "dense", 1.0, every), *_anchors(preset, 1.0, None)]
    for density in preset.densities:
        for allocation in preset.allocations:
            out += [Condition(b, b, density, every, allocation=allocation)
                    for b in preset.baselines]  # fmt: skip
            if "rigl" in preset.baselines:
                out.append(Condition("rigl_continual", "rigl", density, every,
                                     horizon=CONTINUAL_HORIZON, allocation=allocation))  # fmt: skip
            out += _anchors(preset, density, allocation)
        out.append(Condition("emrakul", "emrakul", density, every, variant="emrakul"))
    first = preset.densities[0]
    for ablation in preset.ablations:
        if ablation not in ABLATIONS:
            raise KeyError(f"unknown ablation {ablation!r}; valid: {', '.join(ABLATIONS)}")
        own = ablation in TRAINED_ABLATIONS or ablation == "imitation_only"
        variant = ablation if own else "emrakul"
        switches = SWITCHES.get(ablation, ())
        for density in preset.densities if ablation in EVERY_DENSITY else (first,):
            out.append(Condition(f"emrakul_{ablation}", "emrakul", density, every, variant,
                                 switches))  # fmt: skip
    if len(preset.train_seeds) > 1:
        labels = run_labels(preset)
        warm = preset.imitation > 0  # the warm start's snapshot, surgeries 0
        if warm and "imitation_only" not in preset.ablations:
            out.append(Condition(labels[0][1], "emrakul", first, every, "imitation_only"))
        for run, (full, imitation) in enumerate(labels[1:], start=1):
            out.append(Condition(full, "emrakul", first, every, "emrakul", run=run))
            if warm:
                out.append(Condition(imitation, "emrakul", first, every, "imitation_only",
                                     run=run))  # fmt: skip
    out.append(Condition("cbp", "cbp", 1.0, (preset.plasticity_stream,)))
    return out


def _anchors(preset: QualityPreset, density: float, allocation: str | None) -> list[Condition]:
    """The preset's anchors at ``density`` (the dense ones at 1, the others below), once per
    option set of their grid."""
    every = tuple(s.name for s in preset.streams)
    return [
        Condition(name, anchor.policy, density, every, allocation=allocation,
                  overrides=anchor.overrides, options=options)
        for name in preset.anchors
        if (anchor := ANCHORS[name]).dense == (density == 1.0)
        for options in anchor.options()
    ]  # fmt: skip
