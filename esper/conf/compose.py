"""Compose a validated :class:`~esper.config.EsperConfig` from command-line overrides.

Hydra's compose API does the merging (``workload=mnist1d_permuted workload.batch_size=64``);
this module turns each way an override can be wrong into a :class:`ConfigError` whose message
names the bad key or value and what is allowed, and checks that every registry name and
parameter in the workload exists before anything runs.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from esper.conf.checks import (
    REWARD_KEYS,
    ConfigError,
    check_component,
    check_host_size,
    check_optimizer,
    validate_platform,
)
from esper.conf.searchable import check_bounds
from esper.conf.store import GROUPS, PRIMARY, options, register
from esper.config import ComponentConfig, EsperConfig

__all__ = ["ConfigError", "chosen_option", "compose", "compose_dictconfig", "to_yaml"]


def _split(override: str) -> tuple[str, str]:
    key, sep, value = override.partition("=")
    if not sep or not key.lstrip("+~"):
        raise ConfigError(
            f"override {override!r} is not of the form KEY=VALUE (e.g. workload=digits_permuted)"
        )
    return key.lstrip("+~"), value


def _check_groups(overrides: Sequence[str]) -> None:
    for override in overrides:
        key, value = _split(override)
        if key in GROUPS and value not in options(key):
            raise ConfigError(f"unknown {key} {value!r}; valid {key}s: {', '.join(options(key))}")


_FREE_DICTS = (".params", ".sensors", ".learner_params", ".general_params", ".retention",
               ".optimizer_params")  # fmt: skip


def _free_params(override: str) -> str:
    """Let ``...params.KEY=VALUE`` add a key without Hydra's ``++`` (params are free-form dicts
    whose names :func:`validate` checks against the registry entry's signature)."""
    key, _ = _split(override)
    free = any(f"{d}." in key or key.endswith(d) for d in _FREE_DICTS)
    if not override.startswith(("+", "~")) and free:
        return "++" + override
    return override


def _raw_compose(overrides: Sequence[str]) -> DictConfig:
    register()
    with initialize(version_base="1.3", config_path=None):
        return hydra_compose(config_name=PRIMARY, overrides=[_free_params(o) for o in overrides])


def _explain(err: BaseException, overrides: Sequence[str]) -> ConfigError:
    """Find the OmegaConf error behind a Hydra one and say which key and value are wrong."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return ConfigError(str(err).strip().splitlines()[0])
    full_key = str(getattr(cause, "full_key", "") or "")
    message = str(getattr(cause, "msg", cause)).strip().splitlines()[0]
    if "not in struct" in message or ("Key '" in message and "not" in message):
        parent = full_key.rpartition(".")[0]
        groups = [o for o in overrides if _split(o)[0] in GROUPS]
        node = OmegaConf.select(_raw_compose(groups), parent) if parent else _raw_compose(groups)
        valid = ", ".join(str(k) for k in node) if isinstance(node, DictConfig) else "(none)"
        where = f"under {parent!r}" if parent else "at the top level"
        return ConfigError(f"unknown key {full_key!r}; valid keys {where}: {valid}")
    value = next((_split(o)[1] for o in overrides if _split(o)[0] == full_key), None)
    shown = f" {value!r}" if value is not None else ""
    return ConfigError(f"invalid value{shown} for {full_key!r}: {message}")


def compose_dictconfig(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config as an OmegaConf ``DictConfig`` (what ``esper config show`` prints).

    Raises:
        ConfigError: an unknown group option, an unknown key or a value of the wrong type.
    """
    _check_groups(overrides)
    overrides = [b for o in overrides for b in _bound_overrides(o)]
    hydra_overrides = [o for o in overrides if not o.startswith(_BOUNDS)]
    try:
        cfg = _raw_compose(hydra_overrides)
        for override in overrides:
            if override.startswith(_BOUNDS):
                _set_bound(cfg, override)
        OmegaConf.to_object(cfg)  # type conversion of every field, e.g. enums
    except (HydraException, OmegaConfBaseException) as err:
        raise _explain(err, overrides) from err
    return cfg


_BOUNDS = "search.bounds."


def _bound_overrides(override: str) -> list[str]:
    """``search.bounds={reward.beta:[0,1],policy.params.heat_tau:[1,20]}`` as one
    ``search.bounds.KEY=[LOW,HIGH]`` override per key (Hydra would read the dotted keys as
    nested dicts); any other override as it is."""
    key, value = _split(override) if "=" in override else (override, "")
    if key != _BOUNDS.rstrip(".") or not value.strip().startswith("{"):
        return [override]
    text = value.strip()[1:-1]
    out = []
    for item in re.findall(r"([\w.]+)\s*:\s*(\[[^\]]*\])", text):
        out.append(f"{_BOUNDS}{item[0]}={item[1]}")
    if not out and text.strip():
        raise ConfigError(f"search.bounds must be {{KEY:[low,high],...}}, got {value!r}")
    return out


def _number(value: Any) -> Any:
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _set_bound(cfg: DictConfig, override: str) -> None:
    """``search.bounds.KEY=[LOW,HIGH]``: a search bound whose ``KEY`` holds dots
    (``reward.beta``), which Hydra's override grammar cannot address inside a dict."""
    key, value = _split(override)
    bound = yaml.safe_load(value)
    if isinstance(bound, list):  # YAML 1.1 reads 1e-4 as a string
        bound = [_number(v) for v in bound]
    if not (isinstance(bound, list) and all(isinstance(v, int | float) for v in bound)):
        raise ConfigError(f"{key} must be [low, high], got {value!r}")
    with open_dict(cfg.search.bounds):
        cfg.search.bounds[key[len(_BOUNDS) :]] = [float(v) for v in bound]


def compose(overrides: Sequence[str] = ()) -> EsperConfig:
    """Compose, type-check and validate the configuration.

    Args:
        overrides: Hydra overrides such as ``["workload=mnist1d_permuted", "experiment.seed=3"]``.

    Raises:
        ConfigError: naming the bad key or value and what is allowed.
    """
    cfg = compose_dictconfig(overrides)
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, EsperConfig)
    validate(obj)
    return obj


def from_plain(plain: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> EsperConfig:
    """Rebuild a composed config from :func:`esper.config.to_plain` output (what Ray actors and
    Tune trials receive), with dotted-key ``overrides`` (a trial's sampled values), validated.

    Raises:
        ConfigError: naming the bad key or value.
    """
    try:
        node = OmegaConf.merge(OmegaConf.structured(EsperConfig), dict(plain))
        for key, value in (overrides or {}).items():
            OmegaConf.update(node, key, value, force_add=True)
        obj = OmegaConf.to_object(node)
    except OmegaConfBaseException as err:
        raise ConfigError(f"bad config: {err}".splitlines()[0]) from err
    assert isinstance(obj, EsperConfig)
    validate(obj)
    return obj


def chosen_option(group: str, overrides: Sequence[str]) -> str:
    """The option of ``group`` that ``overrides`` select (the default when none does)."""
    choice = next(
        (_split(o)[1] for o in reversed(overrides) if _split(o)[0] == group),
        None,
    )
    if choice is not None:
        return choice
    for entry in EsperConfig().defaults:
        if isinstance(entry, dict) and group in entry:
            return str(entry[group])
    raise ConfigError(f"unknown config group {group!r}; valid groups: {', '.join(GROUPS)}")


def to_yaml(cfg: DictConfig) -> str:
    """YAML text of a composed config."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def validate(cfg: EsperConfig) -> None:
    """Check registry names and parameters and value ranges of a composed config.

    Raises:
        ConfigError: naming the key.
    """
    # Deferred: composing a config (`esper config show`) should not load torch; workloads and
    # policies never import esper.conf, so these imports point down the layers only.
    from esper.workloads.datasets import SOURCES
    from esper.workloads.hosts import HOSTS
    from esper.workloads.scalpel import DISTRIBUTIONS, MECHANISMS
    from esper.workloads.schedules import SCHEDULES
    from esper.workloads.sensors import SensorConfig
    from esper.workloads.sensors.config import check_fused

    w = cfg.workload
    check_component("workload.dataset", w.dataset, SOURCES)
    for i, drift in enumerate(w.drifts):
        check_component(f"workload.drifts[{i}]", drift, _drifts_for(w.dataset.name))
    check_component("workload.schedule", w.schedule, SCHEDULES)
    check_component("workload.host", w.host, HOSTS, fixed=("input_shape", "num_outputs"))
    check_component("workload.scalpel.mechanism", w.scalpel.mechanism, MECHANISMS)
    if w.scalpel.distribution not in DISTRIBUTIONS:
        raise ConfigError(
            f"unknown layer distribution {w.scalpel.distribution!r} at "
            f"workload.scalpel.distribution; valid: {', '.join(DISTRIBUTIONS.names())}"
        )
    if w.scalpel.selection not in ("random", "magnitude"):
        raise ConfigError(
            f"workload.scalpel.selection must be 'random' or 'magnitude', "
            f"got {w.scalpel.selection!r}"
        )
    sensor_fields = list(inspect.signature(SensorConfig).parameters)
    for name in w.organism.sensors:
        if name not in sensor_fields:
            raise ConfigError(
                f"unknown key workload.organism.sensors.{name}; allowed: {', '.join(sensor_fields)}"
            )
    if w.organism.sensors.get("fused", False):
        try:
            check_fused(sense_batches=w.organism.sense_batches, memory_capacity=w.memory.capacity,
                        surgery_interval=cfg.policy.surgery_interval,
                        cohort=cfg.policy.training.cohort)  # fmt: skip
        except ValueError as err:
            raise ConfigError(str(err)) from err
    from esper.workloads.cohort import check_cohort_config
    from esper.workloads.memory import check_config

    try:
        check_config(w.memory)
        check_cohort_config(w, cfg.policy.training.cohort)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    from esper.policies import POLICIES

    check_component("policy", ComponentConfig(cfg.policy.name, cfg.policy.params), POLICIES)
    from esper.policies.learners import LEARNERS

    if cfg.policy.training.learner not in LEARNERS:
        raise ConfigError(
            f"unknown learner {cfg.policy.training.learner!r} at policy.training.learner; "
            f"valid learners: {', '.join(LEARNERS)}"
        )
    for i, name in enumerate(cfg.policy.training.workloads):
        if name not in options("workload"):
            raise ConfigError(
                f"unknown workload {name!r} at policy.training.workloads[{i}]; "
                f"valid workloads: {', '.join(options('workload'))}"
            )
        if cfg.policy.training.cohort > 1:  # a replica's workload, composed as it will be
            try:
                preset = compose([f"workload={name}"]).workload
                check_cohort_config(preset, cfg.policy.training.cohort)
            except ValueError as err:
                raise ConfigError(f"policy.training.workloads[{i}]={name}: {err}") from err
    positive = {
        "workload.num_tasks": w.num_tasks,
        "workload.batch_size": w.batch_size,
        "experiment.log_every": cfg.experiment.log_every,
        "experiment.recovery_window": cfg.experiment.recovery_window,
        "policy.surgery_interval": cfg.policy.surgery_interval,
        "policy.training.surgeries": cfg.policy.training.surgeries,
        "policy.training.rollout": cfg.policy.training.rollout,
        "workload.organism.sense_batches": w.organism.sense_batches,
        "workload.organism.spike_window": w.organism.spike_window,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be ≥ 1, got {value}")
    if cfg.experiment.steps is not None and cfg.experiment.steps < 1:
        raise ConfigError(f"experiment.steps must be ≥ 1 or null, got {cfg.experiment.steps}")
    if not (math.isfinite(w.lr) and w.lr > 0):
        raise ConfigError(f"workload.lr must be a finite number > 0, got {w.lr}")
    if not 0.0 <= w.momentum < 1.0:
        raise ConfigError(f"workload.momentum must lie in [0, 1), got {w.momentum}")
    check_optimizer(w)
    for key in REWARD_KEYS:
        value = getattr(cfg.reward, key)
        if not (math.isfinite(value) and 0.0 <= value <= _MAX_WEIGHT):
            raise ConfigError(f"reward.{key} must lie in [0, {_MAX_WEIGHT:g}], got {value}")
    _build_components(cfg)
    if not 0.0 < cfg.policy.density <= 1.0:
        raise ConfigError(f"policy.density must be in (0, 1], got {cfg.policy.density}")
    if cfg.search.mode not in ("max", "min"):
        raise ConfigError(f"search.mode must be 'max' or 'min', got {cfg.search.mode!r}")
    validate_platform(cfg)
    check_bounds(cfg)


_MAX_WEIGHT = 1e3
"""Largest reward weight accepted (a weight of 1e300 is a typo, not a shaping)."""


def _drifts_for(dataset: str) -> Any:
    """The drift registry of a dataset: dynamics drifts for an environment (an agent's
    world, :mod:`esper.workloads.rl`), data drifts otherwise."""
    from esper.workloads.drift import DRIFTS
    from esper.workloads.rl import ENV_DRIFTS, ENVIRONMENTS

    return ENV_DRIFTS if dataset in ENVIRONMENTS else DRIFTS


def _build_components(cfg: EsperConfig) -> None:
    """Build the cheap components (drifts, schedule, mask mechanism, policy) once, so that a
    parameter out of its range (``n > m``, a negative temperature, a zero task length) is
    reported now, naming its key, instead of crashing the run later."""
    from esper.policies import POLICIES
    from esper.policies.base import dense_start
    from esper.workloads.rl import ENVIRONMENTS
    from esper.workloads.scalpel import MECHANISMS
    from esper.workloads.schedules import SCHEDULES

    w = cfg.workload
    _, policy_params = dense_start(cfg.policy.density, cfg.policy.name, cfg.policy.params)
    drifts = _drifts_for(w.dataset.name)
    if w.dataset.name in ENVIRONMENTS:  # an agent's world: its drifts bind to the environment
        from esper.workloads.factory import build_stream

        try:
            build_stream(w, 0)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"workload ({w.dataset.name!r}): {err}") from err
    built: list[tuple[str, Any, ComponentConfig]] = [
        *((f"workload.drifts[{i}]", drifts, d) for i, d in enumerate(w.drifts)),
        ("workload.schedule", SCHEDULES, w.schedule),
        ("workload.scalpel.mechanism", MECHANISMS, w.scalpel.mechanism),
        ("policy", POLICIES, ComponentConfig(cfg.policy.name, policy_params)),
    ]
    for key, registry, component in built:
        try:
            registry[component.name](**component.params)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{key} ({component.name!r}): {err}") from err
    check_host_size(cfg)
