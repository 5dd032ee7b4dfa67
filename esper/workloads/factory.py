"""Build a workload (stream, host network, optimizer) from its config."""

from __future__ import annotations

import torch
from torch import nn

from esper.config import Optimizer, WorkloadConfig
from esper.workloads.datasets import make_source
from esper.workloads.drift import make_drift
from esper.workloads.hosts import Host, make_host
from esper.workloads.schedules import make_schedule
from esper.workloads.stream import DriftStream

__all__ = ["build_host", "build_optimizer", "build_stream"]


def _plain(params: dict[str, object]) -> dict[str, object]:
    """Lists from YAML become tuples where our constructors expect sequences."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def build_stream(cfg: WorkloadConfig, seed: int) -> DriftStream:
    """The drifting stream described by ``cfg``, seeded with ``seed``."""
    source = make_source(cfg.dataset.name, **_plain(cfg.dataset.params))
    drifts = [make_drift(d.name, **_plain(d.params)) for d in cfg.drifts]
    schedule = make_schedule(cfg.schedule.name, **_plain(cfg.schedule.params))
    return DriftStream(source, drifts, schedule, cfg.batch_size, seed, num_tasks=cfg.num_tasks)


def build_host(cfg: WorkloadConfig, stream: DriftStream, seed: int) -> Host:
    """The host network of ``cfg`` sized for ``stream``, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_host(
            cfg.host.name,
            stream.source.input_shape,
            stream.source.num_outputs,
            **_plain(cfg.host.params),
        )


def build_optimizer(cfg: WorkloadConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The host network's optimizer."""
    if cfg.optimizer == Optimizer.adam:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
