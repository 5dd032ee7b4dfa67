"""Checks shared by composition: the error type, registry components, the platform's groups.

Kept apart from :mod:`esper.conf.compose` (which merges overrides with Hydra and checks the
workload) so that each module holds one concern.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from esper.config import ComponentConfig, EsperConfig, WorkloadConfig

__all__ = [
    "REWARD_KEYS",
    "ConfigError",
    "check_component",
    "check_host_size",
    "check_optimizer",
    "validate_platform",
]


class ConfigError(ValueError):
    """A configuration is invalid; the message names the key and what is allowed."""


def check_component(
    key: str, component: ComponentConfig, registry: Any, fixed: Sequence[str] = ()
) -> None:
    """Refuse a registry name or a parameter the component does not have (``fixed``: the
    parameters the workload sets itself), naming ``key``."""
    if component.name not in registry:
        raise ConfigError(
            f"unknown {registry.kind} {component.name!r} at {key}.name; "
            f"valid {registry.kind}s: {', '.join(registry.names())}"
        )
    factory: Callable[..., Any] = registry[component.name]
    parameters = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    allowed = [
        n for n, p in parameters.items() if n not in fixed and p.kind is not p.VAR_POSITIONAL
    ]
    for name in component.params:
        if name not in allowed:
            raise ConfigError(
                f"unknown parameter {key}.params.{name} for {registry.kind} {component.name!r}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )


_OWN_KEYS = ("lr", "momentum", "weight_decay")
"""Optimizer arguments with a workload key of their own (not ``workload.optimizer_params``)."""


def check_optimizer(w: WorkloadConfig) -> None:
    """``workload.weight_decay``, ``workload.l2_init`` and ``workload.optimizer_params``: the
    optimizer is built once over a dummy tensor, so that an unknown name or a value it refuses
    is reported now, naming the key."""
    import torch

    from esper.registry import InvalidParameterError
    from esper.workloads.optimizers import make_optimizer

    for key, value in (("weight_decay", w.weight_decay), ("l2_init", w.l2_init)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"workload.{key} must be a finite number ≥ 0 (0: off), got {value}")
    for key in w.optimizer_params:
        if key in _OWN_KEYS:
            raise ConfigError(f"set workload.{key}, not workload.optimizer_params.{key}")
    try:
        make_optimizer(w, [{"params": [torch.zeros(1, requires_grad=True)]}])
    except (InvalidParameterError, ValueError, TypeError) as err:
        raise ConfigError(f"workload.optimizer={w.optimizer.value}: {err}") from err


def _check_reference(reference: str, metric: str) -> None:
    """``search.reference``: ``none`` or a heuristic surgeon that starts at the budget (the twin
    is built at the member's density); the ``fitness`` metric needs one."""
    from esper.policies import POLICIES

    allowed = [n for n in POLICIES.names() if n != "emrakul" and not POLICIES[n].prunes_from_dense]
    if reference != "none" and reference not in allowed:
        raise ConfigError(
            f"unknown search.reference {reference!r}; valid: none, {', '.join(allowed)}"
        )
    if metric == "fitness" and reference == "none":
        raise ConfigError(
            "search.metric=fitness is accuracy relative to a reference twin, but "
            "search.reference=none: set search.reference=rigl or search.metric=online_accuracy"
        )


def _check_control(control: str, credit: str, reference: str) -> None:
    """``policy.training.control``: ``none`` or a control surgeon (on the platform the control
    twin is the reference twin, so the two cannot name different surgeons), and
    ``policy.training.credit``."""
    from esper.policies.credit import check_control, check_credit

    try:
        check_control(control)
        check_credit(credit)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if control != "none" and reference not in ("none", control):
        raise ConfigError(
            f"policy.training.control={control} and search.reference={reference}: an organism "
            "has one twin, the control of its rewards and the reference of its fitness; name "
            "the same surgeon in both (or search.reference=none)"
        )


def _check_imitation(imitation: int, learner: str) -> None:
    """``policy.training.imitation`` (:func:`esper.policies.imitation.check_imitation`)."""
    from esper.policies.imitation import check_imitation

    try:
        check_imitation(imitation, learner)
    except ValueError as err:
        raise ConfigError(str(err)) from err


REWARD_KEYS = ("alpha", "beta", "gamma", "delta", "epsilon")
"""The reward weights (``reward.<key>``), the only reward keys a search may vary."""


def validate_platform(cfg: EsperConfig) -> None:
    """The ``search`` and ``cluster`` groups and the platform's training settings."""
    t, search, cluster = cfg.policy.training, cfg.search, cfg.cluster
    at_least = {
        "policy.training.replicas": (t.replicas, 1),
        "policy.training.cohort": (t.cohort, 1),
        "policy.training.iterations": (t.iterations, 1),
        "policy.training.max_staleness": (t.max_staleness, 0),
        "search.num_samples": (search.num_samples, 1),
        "search.perturbation_interval": (search.perturbation_interval, 1),
        "search.grid_points": (search.grid_points, 2),
        "search.fitness_window": (search.fitness_window, 1),
        "cluster.max_restarts": (cluster.max_restarts, 0),
    }
    for key, (value, low) in at_least.items():
        if value < low:
            raise ConfigError(f"{key} must be ≥ {low}, got {value}")
    if not 0.0 < search.quantile_fraction <= 0.5:
        raise ConfigError(
            f"search.quantile_fraction must lie in (0, 0.5], got {search.quantile_fraction}"
        )
    if not 0.0 <= search.resample_probability <= 1.0:
        raise ConfigError(
            f"search.resample_probability must lie in [0, 1], got {search.resample_probability}"
        )
    _check_reference(search.reference, search.metric)
    _check_control(t.control, t.credit, search.reference)
    _check_imitation(t.imitation, t.learner)
    for key in ("replica_cpus", "learner_cpus"):
        if not getattr(cluster, key) > 0:
            raise ConfigError(f"cluster.{key} must be > 0, got {getattr(cluster, key)}")
    if cluster.replica_gpus < 0 or (cluster.num_cpus is not None and cluster.num_cpus < 1):
        raise ConfigError(
            f"cluster.replica_gpus must be ≥ 0 ({cluster.replica_gpus}) and cluster.num_cpus "
            f"≥ 1 or null ({cluster.num_cpus})"
        )


_BYTES_PER_PARAMETER = 16
"""What one host parameter costs an organism at least: the weight, its gradient, the
optimizer's momentum and the mask, 4 bytes each."""

_SHAPE_PROBE = 16
"""Examples of a pool source built only to read its input shape and classes (generating the
60,000 of the ``standard`` stream's MNIST-1D pool would cost every composition seconds)."""


def check_host_size(cfg: EsperConfig) -> None:
    """Refuse a host that cannot fit in this machine's memory, naming its size, before
    anything is allocated: it is built on PyTorch's ``meta`` device (shapes only).

    Raises:
        ConfigError: naming ``workload.host.params``, the parameter count and the memory.
    """
    import torch

    from esper.workloads import make_source
    from esper.workloads.datasets import SOURCES
    from esper.workloads.hosts import make_host
    from esper.workloads.rl import ENVIRONMENTS

    w = cfg.workload
    if w.dataset.name in ENVIRONMENTS:  # an agent's host is sized by its environment
        return
    params = dict(w.dataset.params)
    if "num_samples" in inspect.signature(SOURCES[w.dataset.name]).parameters:
        params["num_samples"] = _SHAPE_PROBE  # a pool's shapes do not depend on its size
    source = make_source(w.dataset.name, **params)
    with torch.device("meta"):
        host = make_host(w.host.name, source.input_shape, source.num_outputs, **w.host.params)
    parameters = sum(p.numel() for p in host.parameters())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if parameters * _BYTES_PER_PARAMETER > memory:
        raise ConfigError(
            f"workload.host ({w.host.name!r}, params {dict(w.host.params)}) has "
            f"{parameters:,} parameters: at {_BYTES_PER_PARAMETER} bytes each (weights, "
            f"gradients, momentum, masks) that is {parameters * _BYTES_PER_PARAMETER / 2**30:,.0f} "
            f"GiB, more than this machine's {memory / 2**30:.0f} GiB; choose a smaller host"
        )
