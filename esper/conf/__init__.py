"""Hydra structured configs: schema, registered options, composition."""

from esper.conf.compose import (
    ConfigError,
    chosen_option,
    compose,
    compose_dictconfig,
    from_plain,
    to_yaml,
)
from esper.conf.store import GROUPS, options
from esper.config import (
    ClusterConfig,
    ComponentConfig,
    EsperConfig,
    ExperimentConfig,
    PolicyConfig,
    RewardConfig,
    SearchConfig,
    WorkloadConfig,
)

__all__ = [
    "GROUPS",
    "ClusterConfig",
    "ComponentConfig",
    "ConfigError",
    "EsperConfig",
    "ExperimentConfig",
    "PolicyConfig",
    "RewardConfig",
    "SearchConfig",
    "WorkloadConfig",
    "chosen_option",
    "compose",
    "compose_dictconfig",
    "from_plain",
    "options",
    "to_yaml",
]
