"""The drift suite and protocol of ``esper bench quality``: streams, presets and conditions.

A :class:`QualityPreset` names the streams, densities, surgeons and seeds of one quality
benchmark; :func:`conditions` expands it into the evaluations to run. Three disjoint seed sets
keep the protocol honest: Emrakul trains on streams seeded from ``train_seed``, its checkpoint
is chosen on ``validation_seeds``, and every number of the table comes from ``seeds``, which
neither training nor selection ever saw. A seed draws the stream's permutations, rotations,
class order and noise, so the three sets also differ in drift orderings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ABLATIONS",
    "PRESETS",
    "RIGL_HORIZON",
    "TRAINED_ABLATIONS",
    "Condition",
    "QualityPreset",
    "Stream",
    "conditions",
]


RIGL_HORIZON = 0.75
"""RigL's ``T_end`` as a fraction of the stream: Evci et al. 2020 stop updating the mask at 75%
of training. On a drifting stream that freezes the mask for the last quarter, so the suite also
runs ``rigl_continual`` (``T_end`` = 10 × the stream: a near-constant drop fraction ``α``
throughout), the stronger baseline for continual learning."""

CONTINUAL_HORIZON = 10.0
"""``T_end`` of ``rigl_continual``, as a fraction of the stream."""


@dataclass(frozen=True)
class Stream:
    """One drifting stream of the suite.

    Attributes:
        name: Short name used in the table.
        overrides: Config overrides that compose it (a workload preset and its changes).
        steps: SGD steps of the stream (``num_tasks × task_length``).
    """

    name: str
    overrides: tuple[str, ...]
    steps: int


def _digits(name: str, preset: str, tasks: int, task_length: int, *extra: str) -> Stream:
    overrides = (f"workload={preset}", f"workload.num_tasks={tasks}",
                 f"workload.schedule.params.task_length={task_length}", *extra)  # fmt: skip
    return Stream(name, overrides, tasks * task_length)


SMALL_STREAMS = (
    # Long enough to expose loss of plasticity (Dohare et al. 2024 use thousands of tasks on
    # MNIST; 50 is what a 60-minute budget on 2 cores affords).
    _digits("permuted50", "digits_permuted", 50, 200),
    _digits(
        "class_incremental",
        "digits_class_incremental",
        5,
        300,
        "workload.drifts.0.params.shuffle=true",
    ),
    _digits("label_permuted", "digits_label_permuted", 5, 300),
    _digits("mnist1d_covariate", "mnist1d_covariate", 5, 300),
    # The regression stream of Dohare et al. with a 100-unit host: the paper's 5 hidden units
    # leave nothing to prune at 90-95% sparsity. Online accuracy is 1 / (1 + MSE).
    _digits(
        "regression", "slowly_changing_regression", 10, 1000, "workload.host.params.hidden=[100]"
    ),
    _digits("recurring", "digits_recurring", 6, 300),  # A → B → A → B → A → B
)


@dataclass(frozen=True)
class QualityPreset:
    """One quality benchmark.

    Attributes:
        name: ``small`` or ``full``.
        streams: The drift suite.
        densities: Density budgets every sparse surgeon runs at.
        baselines: Sparse baselines (``esper.policies.POLICIES`` names); dense runs once.
        seeds: Evaluation seeds (one run per condition, stream and seed).
        validation_seeds: Seeds of the checkpoint selection.
        train_seed: Base seed of the training organisms (one per stream × density).
        train_surgeries: Emrakul's training budget, in surgeries over all organisms.
        rollout: Surgeries per training episode.
        imitation: RigL-demonstration surgeries per training organism (warm start).
        snapshot_every: Surgeries between checkpoint candidates.
        ablations: Emrakul variants from :data:`ABLATIONS`, at the first density.
        plasticity_stream: Stream where dense backprop and dense CBP run for the loss-of-
            plasticity reproduction.
        learner_params: Keyword arguments of the Specialists' learner.
    """

    name: str
    streams: tuple[Stream, ...]
    densities: tuple[float, ...] = (0.1, 0.05)
    baselines: tuple[str, ...] = ("static", "random", "set", "rigl", "gmp", "cbp", "redo")
    seeds: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004)
    validation_seeds: tuple[int, ...] = (500,)
    train_seed: int = 0
    train_surgeries: int = 1800
    rollout: int = 16
    imitation: int = 24
    snapshot_every: int = 300
    ablations: tuple[str, ...] = (
        "no_general", "no_imitation", "imitation_only", "general_rigl", "blind_gradient",
        "blind_topology",
    )  # fmt: skip
    plasticity_stream: str = "permuted50"
    learner_params: dict[str, float] = field(default_factory=lambda: {"lr": 1e-4})


ABLATIONS = {
    "no_general": "trained and evaluated without the Surgeon General (layer densities stay ERK)",
    "no_imitation": "trained by RL alone, without the RigL-imitation warm start",
    "imitation_only": "the behaviour-cloned RigL imitation before any RL update",
    "general_rigl": "the trained policy with its Specialists replaced by RigL's rule (the "
    "General still allocates)",
    "blind_gradient": "the trained policy evaluated blind to the gradient sensors (Fisher, "
    "GSNR, coherence, FGSF)",
    "blind_topology": "the trained policy evaluated blind to the topology sensors (structure, "
    "GNN embedding, predicted impact)",
}
"""Emrakul variants an ablation can name, and what each removes. ``no_general`` and
``no_imitation`` are trained on their own; the others use the full policy's checkpoint."""

TRAINED_ABLATIONS = ("no_general", "no_imitation")
"""Ablations that need a training run of their own."""

_EVALUATION_SWITCHES: dict[str, tuple[tuple[str, Any], ...]] = {
    "general_rigl": (("specialists", False),),
    "blind_gradient": (("blind", ("gradient",)),),
    "blind_topology": (("blind", ("topology",)),),
}


PRESETS = {
    "small": QualityPreset("small", SMALL_STREAMS),
    "full": QualityPreset(
        "full",
        (
            _digits("permuted200", "digits_permuted", 200, 300),
            *SMALL_STREAMS[1:],
        ),
        seeds=tuple(range(1000, 1010)),
        validation_seeds=(500, 501, 502),
        train_surgeries=20_000,
        snapshot_every=1000,
        plasticity_stream="permuted200",
    ),
}
"""The presets of ``esper bench quality``: ``small`` fits 60 minutes on 2 cores; ``full`` is
for a Ray cluster or a GPU machine."""


@dataclass(frozen=True)
class Condition:
    """One row of the table: a surgeon at a density.

    Attributes:
        label: Name in the table (policy name, or ``emrakul_<ablation>``).
        policy: Policy to build (``emrakul`` conditions load a trained checkpoint).
        density: Density budget.
        streams: Stream names it runs on (every stream unless restricted).
        variant: The Emrakul training variant whose checkpoint it uses (``None`` otherwise).
        switches: Policy attributes set after loading the checkpoint (ablation switches).
        horizon: RigL's ``T_end`` as a fraction of the stream (RigL conditions only).
    """

    label: str
    policy: str
    density: float
    streams: tuple[str, ...]
    variant: str | None = None
    switches: tuple[tuple[str, Any], ...] = ()
    horizon: float = RIGL_HORIZON


def conditions(preset: QualityPreset) -> list[Condition]:
    """Every condition of ``preset``: dense once, each baseline and Emrakul at each density,
    the ablations at the first density, and dense CBP on the plasticity stream."""
    every = tuple(s.name for s in preset.streams)
    out = [Condition("dense", "dense", 1.0, every)]
    for density in preset.densities:
        out += [Condition(b, b, density, every) for b in preset.baselines]
        if "rigl" in preset.baselines:
            out.append(Condition("rigl_continual", "rigl", density, every,
                                 horizon=CONTINUAL_HORIZON))  # fmt: skip
        out.append(Condition("emrakul", "emrakul", density, every, variant="emrakul"))
    first = preset.densities[0]
    for ablation in preset.ablations:
        if ablation not in ABLATIONS:
            raise KeyError(f"unknown ablation {ablation!r}; valid: {', '.join(ABLATIONS)}")
        switches = _EVALUATION_SWITCHES.get(ablation, ())
        variant = "emrakul" if switches else ablation
        out.append(Condition(f"emrakul_{ablation}", "emrakul", first, every, variant, switches))
    out.append(Condition("cbp", "cbp", 1.0, (preset.plasticity_stream,)))
    return out
