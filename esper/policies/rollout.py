"""One episode of the Emrakul policy on one organism, as data the learners take.

The seam between acting and learning: a replica (in process, or a Ray actor on another node)
calls :func:`rollout` with its own copy of the policy and ships the :class:`Episode` back;
the central learner (:class:`esper.policies.central.CentralLearner`) learns from episodes of
many organisms at once. Everything here is tensors and plain data, so an episode pickles
cheaply through Ray's object store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from esper.policies.emrakul.policy import Decision, EmrakulPolicy
from esper.policies.learners import Transition
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.reward import DIVERGED_REWARD

__all__ = ["COMPONENTS", "Episode", "GeneralStep", "rollout"]

COMPONENTS = ("accuracy", "flops", "oscillation", "gsnr", "spike")
"""The reward terms, in the order of :class:`esper.workloads.reward.RewardComponents`."""


@dataclass
class GeneralStep:
    """One Surgeon General decision: what it saw and did, and the team reward it governed.

    Attributes:
        state: ``[state_dim]`` global state at the decision.
        action: Its raw action.
        log_prob: Log-probability of ``action``.
        reward: Sum of the team rewards of the surgeries until its next decision.
        done: The organism diverged before the next decision.
    """

    state: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    reward: float = 0.0
    done: bool = False


@dataclass
class Episode:
    """What one policy episode on one organism leaves for the learners.

    Attributes:
        transitions: One per surgery, for the Specialists' learner.
        general: The Surgeon General's decisions, for its MAPPO.
        bootstrap: The last global state (``None`` if the organism diverged: no bootstrap).
        metrics: ``surgeries``, ``mean_reward``, ``r_accuracy`` … ``r_spike`` (means),
            ``online_accuracy`` and ``density`` (after the last surgery), ``diverged`` and the
            ``policy_version`` that acted.
    """

    transitions: list[Transition] = field(default_factory=list)
    general: list[GeneralStep] = field(default_factory=list)
    bootstrap: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def _transition(d: Decision, reward: float, nxt: OrganismStep, done: bool) -> Transition:
    next_obs = torch.stack([nxt.observations[n].to_tensor() for n in d.layers]).float()
    return Transition(
        d.obs, d.ids, d.state, d.raw, d.log_prob, reward,
        next_obs, nxt.global_state.to_tensor().float(), done,
    )  # fmt: skip


def rollout(
    organism: Organism,
    step: OrganismStep,
    policy: EmrakulPolicy,
    length: int,
    on_step: Callable[[OrganismStep], None] | None = None,
) -> tuple[Episode, OrganismStep]:
    """Roll ``policy`` out (exploring) on ``organism`` for up to ``length`` surgeries.

    The episode ends early when the host diverges: that surgery earns
    :data:`~esper.workloads.reward.DIVERGED_REWARD` and ends the paths with ``done``.

    Args:
        organism: The organism, already reset.
        step: Its latest step (what the policy acts on first).
        policy: The acting policy (reset here on the organism).
        length: Surgeries in the episode (``≥ 1``).
        on_step: Called with every step (where a replica records events and metrics).

    Returns:
        The episode and the organism's last step.
    """
    if length < 1:
        raise ValueError(f"an episode needs ≥ 1 surgery, got {length}")
    policy.reset(organism, step)
    episode = Episode()
    rewards: list[float] = []
    components: list[dict[str, float]] = []
    general: GeneralStep | None = None
    diverged = False
    for _ in range(length):
        actions = policy.decide(organism, step, explore=True)
        decision = policy.last
        assert decision is not None
        if decision.general_raw is not None:
            if general is not None:
                episode.general.append(general)
            assert decision.general_log_prob is not None
            general = GeneralStep(decision.state, decision.general_raw, decision.general_log_prob)
        nxt = organism.step(actions)
        if on_step is not None:
            on_step(nxt)
        diverged = bool(nxt.info["diverged"])
        reward = DIVERGED_REWARD if diverged else nxt.reward
        rewards.append(reward)
        if nxt.components is not None:
            components.append(dataclasses.asdict(nxt.components))
        if general is not None:
            general.reward += reward
        episode.transitions.append(_transition(decision, reward, nxt, diverged))
        step = nxt
        if diverged:
            break
    if general is not None:
        general.done = diverged
        episode.general.append(general)
    episode.bootstrap = None if diverged else step.global_state.to_tensor().float()
    episode.metrics = {
        "surgeries": len(rewards),
        "mean_reward": sum(rewards) / len(rewards),
        **{
            f"r_{key}": (sum(c[key] for c in components) / len(components))
            if components
            else float("nan")
            for key in COMPONENTS
        },
        "online_accuracy": float(step.info["online_accuracy"]),
        "density": float(step.info["density"]),
        "diverged": diverged,
        "policy_version": policy.policy_version,
    }
    return episode, step
