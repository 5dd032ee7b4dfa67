"""Agents as living networks: environments whose dynamics drift along a stream."""

from esper.workloads.rl.agent import ENVIRONMENTS, AgentSource, AgentStream
from esper.workloads.rl.dynamics import ENV_DRIFTS, PHYSICS, DriftingEnv, EnvDrift

__all__ = [
    "ENVIRONMENTS",
    "ENV_DRIFTS",
    "PHYSICS",
    "AgentSource",
    "AgentStream",
    "DriftingEnv",
    "EnvDrift",
]
