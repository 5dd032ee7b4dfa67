"""Building a workload from its plain config: stream, host network, optimizer, organism.

Everything here takes the plain dataclasses of :mod:`esper.config`; composing them from Hydra
overrides happens above this layer (:mod:`esper.conf`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from esper.config import EsperConfig, WorkloadConfig
from esper.registry import build
from esper.seeding import small_seed
from esper.workloads.datasets import make_source
from esper.workloads.drift import make_drift
from esper.workloads.hosts import Host, make_host
from esper.workloads.l2_init import L2Init
from esper.workloads.memory import DataSide, Memory, Retention
from esper.workloads.optimizers import make_optimizer
from esper.workloads.organism import Organism
from esper.workloads.rl import ENV_DRIFTS, AgentSource, AgentStream
from esper.workloads.rl.contact import decision_critical
from esper.workloads.scalpel import Scalpel
from esper.workloads.schedules import make_schedule
from esper.workloads.sensors import NervousSystem, SensorConfig
from esper.workloads.stream import DriftStream

__all__ = [
    "build_data_side",
    "build_host",
    "build_optimizer",
    "build_organism",
    "build_stream",
    "replica_seed",
    "resolve_device",
]


def _plain(params: dict[str, object]) -> dict[str, object]:
    """Lists from YAML become tuples where our constructors expect sequences."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a ``torch.device``.

    Raises:
        ValueError: an unknown name, or CUDA asked for on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"experiment.device={name!r} is not a device; use cpu, cuda, cuda:N or auto"
        ) from err
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"experiment.device={name!r}: only cpu, cuda, cuda:N and auto are supported"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"experiment.device={name!r} but this machine has no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"experiment.device={name!r} but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return device


def replica_seed(seed: int, replica_id: int) -> int:
    """The seed of replica ``replica_id`` of a trial seeded ``seed`` (replica 0 keeps it), so
    replicas see different streams and initialisations, reproducibly."""
    return seed if replica_id == 0 else small_seed(seed, "replica", replica_id)


def build_stream(cfg: WorkloadConfig, seed: int) -> DriftStream:
    """The drifting stream described by ``cfg``, seeded with ``seed``: an agent's stream of
    replay minibatches when the dataset is an environment (its drifts are then dynamics
    drifts, :data:`esper.workloads.rl.ENV_DRIFTS`)."""
    source = make_source(cfg.dataset.name, **_plain(cfg.dataset.params))
    schedule = make_schedule(cfg.schedule.name, **_plain(cfg.schedule.params))
    if isinstance(source, AgentSource):
        dynamics = [ENV_DRIFTS[d.name](**_plain(d.params)) for d in cfg.drifts]
        agent = AgentStream(source, dynamics, schedule, cfg.batch_size, seed, cfg.num_tasks)
        return agent  # type: ignore[return-value]  # the stream interface, duck-typed
    drifts = [make_drift(d.name, **_plain(d.params)) for d in cfg.drifts]
    return DriftStream(source, drifts, schedule, cfg.batch_size, seed, num_tasks=cfg.num_tasks)


def build_host(
    cfg: WorkloadConfig, stream: DriftStream, seed: int, device: torch.device | str = "cpu"
) -> Host:
    """The host network of ``cfg`` sized for ``stream``, initialised from ``seed`` (on the CPU,
    so every device starts from the same weights), then moved to ``device``. An agent's stream
    acts with it from now on (:meth:`AgentStream.bind_agent`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        host = make_host(
            cfg.host.name,
            stream.source.input_shape,
            stream.source.num_outputs,
            **_plain(cfg.host.params),
        )
    host = host.to(device)
    if isinstance(stream, AgentStream):
        stream.bind_agent(host)
    return host


def build_optimizer(
    cfg: WorkloadConfig, model: nn.Module, scalpel: Scalpel | None = None, seed: int = 0
) -> torch.optim.Optimizer:
    """The host network's optimizer (``workload.optimizer`` with ``lr``, ``momentum``,
    ``weight_decay`` and ``optimizer_params``: :data:`~esper.workloads.optimizers.OPTIMIZERS`;
    its noise, if any, seeded from ``seed``), with L2 Init attached when ``workload.l2_init``
    is above 0 (:class:`~esper.workloads.l2_init.L2Init`, anchored at the weights as they are
    now: build it once they hold their initial values).

    With a ``scalpel``, each prunable tensor gets a parameter group of its own (named by the
    ``"layer"`` key, so sedation can damp single layers), the other host parameters one group,
    and the mask mechanism's learnable parts (gate logits) one without weight decay; UPGD's
    perturbation and L2 Init's pull then act on the masked tensors' supports only.
    """
    named = dict(model.named_parameters())
    groups: list[dict[str, Any]] = [{"params": list(named.values())}]
    mechanism: list[torch.Tensor] = []
    supports: dict[str, torch.Tensor] = {}
    if scalpel is not None:
        prunable = {id(named[n]) for n in scalpel.names}
        groups = [{"params": [named[n]], "layer": n} for n in scalpel.names]
        rest = [p for p in model.parameters() if id(p) not in prunable]
        if rest:
            groups.append({"params": rest})
        mechanism = list(scalpel.parameters())
        supports = {n: scalpel.mask(n) for n in scalpel.names}
    by_param: dict[torch.Tensor, torch.Tensor] = {named[n]: s for n, s in supports.items()}
    optimizer = make_optimizer(cfg, groups, mechanism, seed, by_param)
    if cfg.l2_init > 0:
        L2Init(optimizer, named, cfg.l2_init, supports)  # lives in the optimizer's hooks
    return optimizer


def _rescale_init(host: nn.Module, scalpel: Scalpel) -> None:
    """Sparsity-aware initialisation (Evci et al. 2022): surviving weights × 1/sqrt(density)."""
    named = dict(host.named_parameters())
    with torch.no_grad():
        for name in scalpel.names:
            density = scalpel.density(name)
            if 0.0 < density < 1.0:
                named[name].mul_(density**-0.5)


def build_organism(
    cfg: EsperConfig, replica_id: int = 0, run_id: str = "", trial_id: str = ""
) -> Organism:
    """The organism described by a composed config, on ``experiment.device``.

    The seed of replica ``r`` is :func:`replica_seed` of ``experiment.seed`` and ``r``.
    """
    w = cfg.workload
    seed = replica_seed(cfg.experiment.seed, replica_id)
    device = resolve_device(cfg.experiment.device)
    stream = build_stream(w, seed)
    host = build_host(w, stream, seed, device)
    mechanism = w.scalpel.mechanism
    scalpel = Scalpel(
        host,
        mechanism=mechanism.name,
        mechanism_params=dict(mechanism.params),
        density=None if mechanism.name == "nm" else cfg.policy.density,
        distribution=w.scalpel.distribution,
        keep_dense=tuple(w.scalpel.keep_dense),
        selection=w.scalpel.selection,
        seed=seed,
    )
    if w.scalpel.rescale_init:
        _rescale_init(host, scalpel)
    sensor_params = _plain(dict(w.organism.sensors))
    sensors = build(SensorConfig, {"seed": seed, **sensor_params}, "sensor config")
    loss_fn, boundary_fn = None, None
    if stream.source.kind == "regression":

        def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (out.squeeze(-1) - y) ** 2

    elif stream.source.kind == "q_learning":  # the squared TD error of the action taken

        def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (out.gather(-1, y[..., :1].long()).squeeze(-1) - y[..., 1]) ** 2

        boundary_fn = decision_critical  # the contact-aware Fisher on decision-critical states

    return Organism(
        host,
        stream,
        scalpel,
        NervousSystem(sensors, loss_fn=loss_fn, boundary_fn=boundary_fn),
        build_optimizer(w, host, scalpel, seed),
        surgery_interval=cfg.policy.surgery_interval,
        reward=cfg.reward,
        penalty_weight=w.scalpel.penalty_weight,
        spike_window=w.organism.spike_window,
        sense_batches=w.organism.sense_batches,
        seed=seed,
        run_id=run_id,
        trial_id=trial_id,
        replica_id=replica_id,
        data_side=build_data_side(w, stream, seed, device),
    )


def build_data_side(
    w: WorkloadConfig, stream: DriftStream, seed: int, device: torch.device
) -> DataSide | None:
    """The replay buffer and retention of ``workload.memory`` (``None`` at capacity 0).

    Raises:
        ValueError: a memory on a stream that is not classification, or a bad setting (named).
    """
    m = w.memory
    if m.capacity == 0:
        return None
    if stream.source.kind != "classification":
        raise ValueError(
            f"workload.memory needs a classification stream; {w.dataset.name!r} is "
            f"{stream.source.kind} (set workload.memory.capacity=0)"
        )
    memory = build(Memory, {
        "capacity": m.capacity, "input_shape": tuple(stream.source.input_shape),
        "num_classes": stream.source.num_outputs, "strategy": m.strategy,
        "replay_ratio": m.replay_ratio, "refresh": m.refresh, "seed": seed, "device": device,
    }, "workload.memory")  # fmt: skip
    retention = build(Retention, {**_plain(dict(m.retention)), "synchronized": m.synchronized},
                      "workload.memory.retention")  # fmt: skip
    return DataSide(memory, retention)
