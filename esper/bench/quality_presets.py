"""The presets of ``esper bench quality``, each a :class:`~esper.bench.quality_suite.QualityPreset`:
``small``, ``learning``, ``learning_long``, ``learning_sweep``, ``elastic``, ``anchors``,
``standard``, ``standard_part`` and ``full``
(:data:`PRESETS`), with what each asks and what it costs.
"""

from __future__ import annotations

import dataclasses

from esper.bench.quality_anchors import ANCHORS
from esper.bench.quality_streams import (
    SMALL_STREAMS,
    STANDARD_PART_STREAM,
    STANDARD_STREAM,
    drift_stream,
)
from esper.bench.quality_suite import SPARSE_BASELINES, QualityPreset

__all__ = [
    "ANCHOR_PRESET",
    "ELASTIC",
    "LEARNING",
    "LEARNING_LONG",
    "LEARNING_SWEEP",
    "PRESETS",
    "STANDARD",
    "STANDARD_PART",
]


LEARNING = QualityPreset(
    "learning",
    SMALL_STREAMS,
    baselines=("rigl",),
    validation_seeds=(500, 501),
    train_seeds=(0, 100, 200),
    ablations=(
        "imitation_only",
        "retrained_blind_gradient",
        "retrained_blind_topology",
        "blind_gradient",
    ),
)
"""Does Emrakul learn? The checks of that question at a size for 2 cores: three independent
training runs (is the gain over RigL bigger than the spread between runs, and does each run's
RL beat its own imitation warm start?), the sensor groups ablated by retraining blind as well
as by blinding a trained policy, and RigL (and ``rigl_continual``) at its best layer allocation.

Cost, scaled from the ``small`` preset's 2092 s (3 trained variants × 1800 surgeries, 20
checkpoint candidates and 755 evaluation runs, ≈ 4.5 M SGD steps), at ≈ 0.7 ms a step and
≈ 0.7 s a run to start per core, and ≈ 0.16 s a training surgery with the RigL control twin
(measured 0.16–0.25 s on a busy 2-core machine, 0.08–0.11 s without a control): 5 trainings ×
1800 surgeries (run 0: full, retrained blind gradient and topology; runs 1 and 2: full;
≈ 1500 core-s, three rounds of ≈ 310 s on 2 cores), 35 checkpoint candidates × 6 streams × 2
validation seeds (420 runs, 1.8 M steps, ≈ 1600 core-s), 96 allocation runs (0.4 M steps,
≈ 360 core-s, mostly while the last training runs) and 455 evaluation runs (15 conditions × 6
streams × 5 seeds + dense CBP; 2.0 M steps, ≈ 1700 core-s): about 45 minutes on 2 cores, 51
if a training surgery costs 0.25 s. Measured (2026-12-06, f6079cf, the machine shared with other
work): 57 minutes, of which training 28 (a surgery with its twin ≈ 0.37 core-s under that load)."""

LEARNING_LONG = dataclasses.replace(
    LEARNING,
    name="learning_long",
    train_seeds=(0,),
    train_surgeries=7200,
    snapshot_every=600,
    ablations=("imitation_only",),
)
"""Does a longer training help? :data:`LEARNING`'s run 0 (the same seeds and organisms) trained
4 × as long, 7,200 surgeries, with a checkpoint candidate every 600, against its own imitation
warm start and RigL. Measured (2026-12-07, commit ba5d758): 33 minutes on 2 cores, of which
the one training (one core, 7,200 surgeries with a RigL control twin) about 22."""

LEARNING_SWEEP = dataclasses.replace(
    LEARNING_LONG,
    name="learning_sweep",
    train_surgeries=20_000,
    snapshot_every=1000,
    trainer="sweep",
    sweep_overrides=("cluster.replica_cpus=0.25", "cluster.learner_cpus=0.25"),
)
"""Trained by the platform, 10 × :data:`LEARNING`'s budget: run 0's policy trained by a PBT
sweep (:mod:`esper.bench.quality_sweep`: 4 members, each a central learner with one replica
per stream at density 0.10, all starting from the same imitation warm start; 53 iterations of
16 surgeries per replica, 20,352 surgeries in all, 5,088 per member), chosen on the validation
seeds among the best member's checkpoints (one every 1,000 of its surgeries), the other
members' latest and the warm start, against its own imitation and RigL. For 2 cores with
``--num-cpus 8`` (each member asks for 1.75 logical CPUs). Measured (2026-12-07, commit
d47cc8e): 71 minutes (``wall_s`` 4244), of which the sweep 58 (5.8 surgeries a second)."""

ELASTIC = QualityPreset(
    "elastic",
    SMALL_STREAMS,
    baselines=("rigl", "rigl_elastic"),
    ablations=("elastic",),
    credit_surgeries=0,
    focus="emrakul_elastic",
)
"""Does an elastic budget help? Emrakul trained with an elastic budget (``emrakul_elastic``) at
mean FLOPs 0.10 and 0.05 against RigL at the fixed budget, ``rigl_elastic`` (RigL breathing on
a scripted schedule at the same mean FLOPs: elasticity without learning), the fixed-budget
Emrakul trained the same way, and dense. Two trainings of 1,800 surgeries run side by side;
with 156 selection and 335 evaluation runs, about 30 minutes on 2 cores (scaled from
:data:`LEARNING`'s costs)."""

ANCHOR_PRESET = QualityPreset(
    "anchors",
    SMALL_STREAMS,
    baselines=("rigl", "shrink_perturb", "swr"),
    anchors=tuple(ANCHORS),
    ablations=(),
    allocations=("erk",),
    credit_surgeries=0,
)
"""Emrakul against the plasticity baselines, for 2 cores: RigL (and ``rigl_continual``), Shrink
& Perturb and SWR at ERK, and every anchor of :data:`~esper.bench.quality_anchors.ANCHORS`
(UPGD, L2 Init and layer norm + weight decay on the static mask and dense, UPGD under RigL),
each at the options its validation runs favour. Meant for ``--checkpoint`` (a trained policy
that never saw these evaluation seeds, such as the ``learning`` preset's: trained on its own
seeds, its checkpoint chosen on validation seeds 500 and 501): nothing trains; without it,
run 0 trains and its checkpoint is chosen first.

Cost, at :data:`LEARNING`'s ≈ 3.7 core-s an evaluation run (its 455 runs, 2.0 M steps, took
≈ 1700 core-s): 30 option candidates (11 at each density, 8 dense) × 6 streams × 1 validation
seed = 180 validation runs (0.8 M steps, ≈ 670 core-s), then 665 evaluation runs (22
conditions × 6 streams × 5 seeds + dense CBP; 2.9 M steps, ≈ 2460 core-s): about 27 minutes on
2 cores. Measured (2026-12-06, commit b4d7083, the machine partly shared with a test run):
41 minutes (``wall_s`` 2436), 180 validation runs in ≈ 13 and 665 evaluation runs in ≈ 27."""

STANDARD = QualityPreset(
    "standard",
    (STANDARD_STREAM,),
    baselines=("rigl",),
    anchors=("upgd", "rigl_upgd", "dense_upgd"),
    seeds=(1000, 1001, 1002),
    ablations=(),
    allocations=("erk",),
    credit_surgeries=0,
    plasticity_stream=STANDARD_STREAM.name,
)
"""One published protocol reproduced as closely as the data allows: UPGD's input-permuted
MNIST (Elsayed & Mahmood, ICLR 2024: 200 tasks × 5,000 steps, batch 1, a 300×150 ReLU MLP, 20
seeds) on MNIST-1D (:func:`~esper.bench.quality_streams.standard_stream` says what differs:
40-dimensional generated inputs instead of 784 pixels, a pool of 60,000 generated samples,
surgeries every 100 steps, sparse budgets, 3 evaluation seeds instead of 20). Emrakul (a
``--checkpoint``: nothing trains, as :data:`ANCHOR_PRESET`) against RigL (and
``rigl_continual``) at ERK, UPGD on the static mask, under RigL and dense (their step size
chosen on validation seed 500 from :data:`~esper.bench.quality_anchors.UPGD_LR`, the suite's
grid, all above this stream's SGD step of 0.01), dense backprop and dense CBP, at densities
0.1 and 0.05.

For a cluster (``--address``): 15 validation runs (UPGD's 3 step sizes × 5 conditions) and 39
evaluation runs (13 conditions × 3 seeds), each of 1M steps. Cost, from a short timing at
batch 1 on a busy 2-core machine (2026-12-06): ≈ 0.7 ms a step for SGD surgeons, dense and
CBP, ≈ 1.6 ms under UPGD, so ≈ 12 minutes a run (≈ 27 under UPGD), ≈ 65,000 core-s in all:
about 9 hours on 2 cores, about an hour on a cluster of 54 CPUs (every validation run at
once, then every evaluation run). Generating the 60,000 samples (all distinct) takes 13–16 s,
once per worker process. A run cannot yet resume from a checkpoint of its own (resumable long
runs are not available): a worker lost mid-run loses that run."""

STANDARD_PART = dataclasses.replace(
    STANDARD, name="standard_part", streams=(STANDARD_PART_STREAM,), seeds=(1000,)
)
"""The stated fraction of :data:`STANDARD` that 2 cores afford: its first 10 tasks (50,000 steps
a run, 1/20 of the stream), one evaluation seed (1000), otherwise the same protocol. 15
validation and 13 evaluation runs, ≈ 1,900 core-s at :data:`STANDARD`'s rates: about 20
minutes on 2 cores. Measured (2026-12-06, commit b13ce64): 16 minutes (``wall_s`` 951)."""

PRESETS = {
    "small": QualityPreset(
        "small",
        SMALL_STREAMS,
        baselines=(*SPARSE_BASELINES, "shrink_perturb", "swr"),
        anchors=tuple(ANCHORS),
    ),
    "learning": LEARNING,
    "learning_long": LEARNING_LONG,
    "learning_sweep": LEARNING_SWEEP,
    "elastic": ELASTIC,
    "anchors": ANCHOR_PRESET,
    "standard": STANDARD,
    "standard_part": STANDARD_PART,
    "full": QualityPreset(
        "full",
        (
            drift_stream("permuted200", "digits_permuted", 200, 300),
            *SMALL_STREAMS[1:],
        ),
        seeds=tuple(range(1000, 1010)),
        validation_seeds=(500, 501, 502),
        train_surgeries=20_000,
        snapshot_every=1000,
        ablations=("no_general", "general_rigl", "blind_gradient", "blind_topology"),
        plasticity_stream="permuted200",
        trainer="sweep",
    ),
}
"""The presets of ``esper bench quality``, with their cost on 2 cores:

* ``small``: every baseline and anchor, and the ablations. It took 35 minutes before Shrink &
  Perturb, SWR and the anchors joined it, which add 360 validation and 450 evaluation runs
  (≈ 3000 core-s at :data:`ANCHOR_PRESET`'s rates); measured 64 (2026-12-07, commit 14c4a48).
* ``learning`` (:data:`LEARNING`): does Emrakul learn? About 45.
* ``learning_long`` (:data:`LEARNING_LONG`): its run 0 trained 4 × as long. 33 (measured).
* ``elastic`` (:data:`ELASTIC`): does an elastic budget help? 34 (measured).
* ``anchors`` (:data:`ANCHOR_PRESET`): a given checkpoint against the plasticity baselines,
  41 (measured).
* ``standard`` (:data:`STANDARD`): UPGD's input-permuted MNIST reproduced on MNIST-1D, for a
  cluster; ``standard_part`` (:data:`STANDARD_PART`), its first 10 tasks, 16 (measured).
* ``full``: for a Ray cluster or a GPU machine; trains its policy by a PBT sweep (4 members
  × 6 replicas × 53 iterations of 16 surgeries: 20,352; :mod:`esper.bench.quality_sweep`)."""
