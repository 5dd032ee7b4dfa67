"""The living network's world: data sources, drifting streams, host networks, the Scalpel, the
Nervous System and the organism.

Plain PyTorch; nothing here imports Ray, Hydra or :mod:`esper.conf` (builders take the plain
dataclasses of :mod:`esper.config`).

Devices (``experiment.device``): the heavy tensors live on the host's device — weights, masks
and gates, dense gradients, optimizer state, the stream's batches (streams sample on the CPU with
CPU generators; each batch is moved), mask ages and the sensors' per-weight measurements. Every
random stream is a CPU ``torch.Generator`` whose draws are moved to the device, so CPU and CUDA
runs draw the same numbers. The Nervous System's summaries (observations, global state, topology
GNN, impact predictor, flip-flop history, FGSF series) stay on the CPU, and so do the policies:
they read per-weight scores once to the CPU and hand CPU index tensors to the organism's
``step``, which moves them to the device. Checkpoints load on the CPU (``map_location="cpu"``);
the organism's ``load_state_dict`` moves every restored tensor back to the device.
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
from esper.workloads.imbalance import ClassImbalance  # registers the drift "imbalance"
from esper.workloads.prequential import StepRecord, TaskSummary, prequential_step, summarize_tasks
from esper.workloads.rl import ENV_DRIFTS, ENVIRONMENTS, AgentStream  # registers the agents
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
    "ENVIRONMENTS",
    "ENV_DRIFTS",
    "HOSTS",
    "MLP",
    "SCHEDULES",
    "SOURCES",
    "Abrupt",
    "Affine",
    "AgentStream",
    "Batch",
    "ClassImbalance",
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
