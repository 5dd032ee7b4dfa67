"""The drift suite of ``esper bench quality``: its streams.

A :class:`Stream` is a workload preset and its changes, composed as config overrides, with the
SGD steps it lasts; :data:`SMALL_STREAMS` is the suite every 2-core preset runs (the ``full``
preset lengthens its permuted stream). Presets and conditions are
:mod:`esper.bench.quality_suite`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SMALL_STREAMS", "Stream", "drift_stream"]


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
