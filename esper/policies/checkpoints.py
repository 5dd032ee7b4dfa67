"""Policy checkpoints: everything ``esper train-policy`` learned, safe to open.

A policy checkpoint (kind ``policy`` of :mod:`esper.checkpoint`: tensors and plain data only,
checksummed) holds the policy (name, constructor parameters, whole state), the Specialists'
learner (name, parameters, state) and the Surgeon General's, the organisms' configs as plain
dicts, the budget and the training history. :func:`load_policy` rebuilds a ready-to-act policy:
a policy trained with a discrete head (QMIX) acts through its restored learner. A policy exported
from a sweep member (:mod:`esper.platform.export`) also holds a ``provenance`` dict (run, trial,
iteration, searched values), which :func:`load_policy` does not read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esper.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from esper.config import to_plain
from esper.policies.base import Policy, make_policy
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.learners import make_learner
from esper.policies.training import TrainResult

__all__ = ["KIND", "load_policy", "policy_checkpoint", "save_policy"]

KIND = "policy"
"""The checkpoint kind of trained policies."""


def policy_checkpoint(result: TrainResult) -> dict[str, Any]:
    """The checkpoint payload of a training result."""
    return {
        "policy": {
            "name": result.policy.name,
            "params": dict(result.policy.params),
            "state": result.policy.state_dict(),
        },
        "learner": {
            "name": result.learner.name,
            "params": dict(result.learner.specialists.params),
            "state": result.learner.specialists.state_dict(),
        },
        "general": result.learner.general.state_dict(),
        "config": [to_plain(c) for c in result.configs],
        "surgeries": sum(int(h.get("surgeries", 0)) for h in result.history),
        "history": [to_plain(h) for h in result.history],
    }


def save_policy(path: str | os.PathLike[str], result: TrainResult | Mapping[str, Any]) -> Path:
    """Write ``result``'s checkpoint atomically; returns the path written."""
    payload = policy_checkpoint(result) if isinstance(result, TrainResult) else dict(result)
    return save_checkpoint(path, KIND, payload)


def load_policy(path: str | os.PathLike[str], greedy: bool = True) -> Policy:
    """The policy saved by :func:`save_policy`, ready to act (greedy by default).

    The file is loaded as tensors and plain data only (``weights_only=True``) and its checksum
    verified, so opening it cannot run code.

    Raises:
        FileNotFoundError: no file at ``path``.
        esper.checkpoint.CheckpointError: not a policy checkpoint, or a damaged one.
    """
    checkpoint = load_checkpoint(path, KIND)
    try:
        saved = checkpoint["policy"]
        policy = make_policy(saved["name"], **saved["params"])
        policy.load_state_dict(saved["state"])
        if isinstance(policy, EmrakulPolicy):
            policy.greedy = greedy
            if saved["state"]["discrete"]:  # the policy acts through its learner's Q network
                learner = checkpoint["learner"]
                restored = make_learner(learner["name"], policy, learner["params"])
                restored.load_state_dict(learner["state"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a complete policy checkpoint: missing {err}") from err
    except RuntimeError as err:  # tensor shapes of another action or observation layout
        first = str(err).strip().splitlines()[-1].strip()
        raise CheckpointError(
            f"{path} was saved by a policy with other network shapes (an older Esper?): {first}"
        ) from err
    return policy
