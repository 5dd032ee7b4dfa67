"""Agents as living networks: environments whose dynamics drift along a stream."""

from esper.workloads.rl.dynamics import ENV_DRIFTS, PHYSICS, DriftingEnv, EnvDrift

__all__ = ["ENV_DRIFTS", "PHYSICS", "DriftingEnv", "EnvDrift"]
