"""The drift suite of ``esper bench quality``: its streams.

A :class:`Stream` is a workload preset and its changes, composed as config overrides, with the
SGD steps it lasts; :data:`SMALL_STREAMS` is the suite every 2-core preset runs (the ``full``
preset lengthens its permuted stream), :data:`STANDARD_STREAM` one published protocol at its
own scale (the ``standard`` preset). Presets and conditions are
:mod:`esper.bench.quality_suite`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SMALL_STREAMS", "STANDARD_PART_STREAM", "STANDARD_PART_TASKS", "STANDARD_STREAM",
    "STANDARD_TASKS", "STANDARD_TASK_LENGTH", "Stream", "drift_stream", "standard_stream",
]  # fmt: skip


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


def drift_stream(name: str, workload: str, tasks: int, task_length: int, *extra: str) -> Stream:
    """The stream ``name``: ``tasks`` tasks of ``task_length`` steps of the workload preset
    ``workload``, with the ``extra`` overrides."""
    overrides = (f"workload={workload}", f"workload.num_tasks={tasks}",
                 f"workload.schedule.params.task_length={task_length}", *extra)  # fmt: skip
    return Stream(name, overrides, tasks * task_length)


SMALL_STREAMS = (
    # Long enough to expose loss of plasticity (Dohare et al. 2024 use thousands of tasks on
    # MNIST; 50 is what a 60-minute budget on 2 cores affords).
    drift_stream("permuted50", "digits_permuted", 50, 200),
    drift_stream(
        "class_incremental",
        "digits_class_incremental",
        5,
        300,
        "workload.drifts.0.params.shuffle=true",
    ),
    drift_stream("label_permuted", "digits_label_permuted", 5, 300),
    drift_stream("mnist1d_covariate", "mnist1d_covariate", 5, 300),
    # The regression stream of Dohare et al. with a 100-unit host: the paper's 5 hidden units
    # leave nothing to prune at 90-95% sparsity. Online accuracy is 1 / (1 + MSE).
    drift_stream(
        "regression", "slowly_changing_regression", 10, 1000, "workload.host.params.hidden=[100]"
    ),
    drift_stream("recurring", "digits_recurring", 6, 300),  # A → B → A → B → A → B
)
"""The drift suite of the 2-core presets: 26,300 SGD steps over six streams."""

STANDARD_TASKS = 200
"""Tasks of UPGD's input-permuted MNIST (200 × 5,000 = 1M samples)."""

STANDARD_TASK_LENGTH = 5000
"""Steps (samples, at batch 1) between two input permutations in UPGD's protocol."""

STANDARD_PART_TASKS = 10
"""Tasks of the stated fraction of the standard stream that 2 cores afford (1/20 of it)."""


def standard_stream(tasks: int = STANDARD_TASKS) -> Stream:
    """The first ``tasks`` tasks of UPGD's input-permuted MNIST protocol, on MNIST-1D.

    Follows Elsayed & Mahmood (ICLR 2024, "Addressing Loss of Plasticity and Catastrophic
    Forgetting in Continual Learning"; code ``mohmdelsayed/upgd``, ``core/task/``): a new
    random input permutation every 5,000 samples, 200 tasks (1M samples), one sample a step
    (batch 1), a 300×150 ReLU MLP, scored by online accuracy averaged per task. The workload
    preset is ``mnist1d_permuted_standard`` (:mod:`esper.conf.store`).

    What differs, as the data and Esper allow: MNIST-1D's 40-dimensional generated signals
    (60,000 of them, MNIST's training-set size, generated at run time by the ``mnist1d``
    package: nothing is downloaded) instead of MNIST's 784 pixels, so the first layer has
    40 × 300 weights instead of 784 × 300; samples drawn uniformly with replacement from the
    pool rather than MNIST's order; every task permuted, the first too; plain SGD at step
    size 0.01 for the surgeons (not tuned here, where the paper tunes each method's), whose
    surgeries run every ``surgery_interval`` = 100 steps; sparse budgets (the paper's
    networks are dense); and fewer seeds than the paper's 20 (the preset's).
    """
    return drift_stream("permuted_mnist1d", "mnist1d_permuted_standard", tasks,
                        STANDARD_TASK_LENGTH)  # fmt: skip


STANDARD_STREAM = standard_stream()
"""UPGD's input-permuted MNIST on MNIST-1D at full length: 1M SGD steps at batch 1."""

STANDARD_PART_STREAM = standard_stream(STANDARD_PART_TASKS)
"""Its first :data:`STANDARD_PART_TASKS` tasks: 50,000 steps, the same stream's opening (a
seed draws the same permutations whatever the length)."""
