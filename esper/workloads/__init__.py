"""The living network's world: data sources, drifting streams and host networks.

Plain PyTorch; nothing here imports Ray.
"""

from esper.workloads.datasets import (
    SOURCES,
    PoolSource,
    SlowlyChangingRegression,
    Source,
    make_source,
)
from esper.workloads.drift import (
    DRIFTS,
    Affine,
    ClassIncremental,
    CovariateShift,
    Drift,
    NoiseBurst,
    PermuteInputs,
    PermuteLabels,
    Rotate,
    make_drift,
)
from esper.workloads.hosts import CNN, HOSTS, MLP, Host, TinyTransformer, UnitGroup, make_host
from esper.workloads.prequential import StepRecord, TaskSummary, prequential_step, summarize_tasks
from esper.workloads.schedules import (
    SCHEDULES,
    Abrupt,
    Gradual,
    Phase,
    Recurring,
    Schedule,
    make_schedule,
)
from esper.workloads.stream import Batch, DriftStream

__all__ = [
    "CNN",
    "DRIFTS",
    "HOSTS",
    "MLP",
    "SCHEDULES",
    "SOURCES",
    "Abrupt",
    "Affine",
    "Batch",
    "ClassIncremental",
    "CovariateShift",
    "Drift",
    "DriftStream",
    "Gradual",
    "Host",
    "NoiseBurst",
    "PermuteInputs",
    "PermuteLabels",
    "Phase",
    "PoolSource",
    "Recurring",
    "Rotate",
    "Schedule",
    "SlowlyChangingRegression",
    "Source",
    "StepRecord",
    "TaskSummary",
    "TinyTransformer",
    "UnitGroup",
    "make_drift",
    "make_host",
    "make_schedule",
    "make_source",
    "prequential_step",
    "summarize_tasks",
]
