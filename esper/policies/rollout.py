"""One episode of the Emrakul policy on one organism, as data the learners take.

The seam between acting and learning: a replica (in process, or a Ray actor on another node)
calls :func:`rollout` with its own copy of the policy and ships the :class:`Episode` back;
the central learner (:class:`esper.policies.central.CentralLearner`) learns from episodes of
many organisms at once. Everything here is tensors and plain data, so an episode pickles
cheaply through Ray's object store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from esper.policies.credit import Credit, mean_control
from esper.policies.emrakul.policy import Decision, EmrakulPolicy
from esper.policies.learners import Transition
from esper.workloads.actions import LayerAction
from esper.workloads.cohort import Cohort
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.reward import DIVERGED_REWARD

__all__ = ["COMPONENTS", "Episode", "GeneralStep", "cohort_rollout", "mean_accuracy", "rollout"]

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
        metrics: ``surgeries``, ``mean_reward`` (of the rewards learned from: controlled
            ones under a control twin), ``r_accuracy`` … ``r_spike`` (raw means), ``r_control``
            (the twin's mean accuracy subtracted, ``nan`` without a control),
            ``online_accuracy`` and ``density`` (after the last surgery), ``episode_accuracy``
            (the mean of ``accuracies``), ``diverged`` and the ``policy_version`` that acted.
        accuracies: The online (prequential) accuracy of every SGD step of the episode, in
            order (a reference twin is compared on the same steps).
    """

    transitions: list[Transition] = field(default_factory=list)
    general: list[GeneralStep] = field(default_factory=list)
    bootstrap: torch.Tensor | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    accuracies: list[float] = field(default_factory=list)


def _transition(
    d: Decision, reward: float, nxt: OrganismStep, next_state: torch.Tensor, done: bool
) -> Transition:
    next_obs = torch.stack([nxt.observations[n].to_tensor() for n in d.layers]).float()
    return Transition(
        d.obs, d.ids, d.state, d.raw, d.log_prob, reward, next_obs, next_state, done,
    )  # fmt: skip


class _EpisodeBuilder:
    """One organism's episode, built surgery by surgery (shared by :func:`rollout` and
    :func:`cohort_rollout`)."""

    def __init__(
        self,
        organism: Organism,
        step: OrganismStep,
        policy: EmrakulPolicy,
        credit: Credit | None = None,
    ) -> None:
        policy.reset(organism, step)
        self.organism, self.step, self.policy = organism, step, policy
        self.credit = credit
        self.episode = Episode()
        self.rewards: list[float] = []
        self.components: list[dict[str, float]] = []
        self.general: GeneralStep | None = None
        self.decision: Decision | None = None
        self.diverged = False

    def decide(self) -> dict[str, LayerAction]:
        """The policy's (exploring) actions on the latest step."""
        actions = self.policy.decide(self.organism, self.step, explore=True)
        decision = self.decision = self.policy.last
        assert decision is not None
        if decision.general_raw is not None:
            if self.general is not None:
                self.episode.general.append(self.general)
            assert decision.general_log_prob is not None
            self.general = GeneralStep(
                decision.state, decision.general_raw, decision.general_log_prob
            )
        return actions

    def observe(self, nxt: OrganismStep) -> bool:
        """Take the organism's answer to the last decision; ``True`` when it diverged (the
        episode is over)."""
        assert self.decision is not None
        self.diverged = bool(nxt.info["diverged"])
        reward = DIVERGED_REWARD if self.diverged else nxt.reward
        if self.credit is not None and not self.diverged:
            reward = self.credit(reward, mean_accuracy(nxt.info["accuracies"]))
        self.rewards.append(reward)
        self.episode.accuracies.extend(nxt.info["accuracies"])
        if nxt.components is not None:
            self.components.append(dataclasses.asdict(nxt.components))
        if self.general is not None:
            self.general.reward += reward
        self.episode.transitions.append(
            _transition(self.decision, reward, nxt, self.policy.state_of(nxt), self.diverged)
        )
        self.step = nxt
        return self.diverged

    def finish(self) -> tuple[Episode, OrganismStep]:
        episode, step, components = self.episode, self.step, self.components
        if self.general is not None:
            self.general.done = self.diverged
            episode.general.append(self.general)
        episode.bootstrap = None if self.diverged else self.policy.state_of(step)
        episode.metrics = {
            "surgeries": len(self.rewards),
            "mean_reward": sum(self.rewards) / len(self.rewards),
            **{
                f"r_{key}": (sum(c[key] for c in components) / len(components))
                if components
                else float("nan")
                for key in COMPONENTS
            },
            "r_control": mean_control(self.credit.used)
            if self.credit is not None
            else float("nan"),
            "online_accuracy": float(step.info["online_accuracy"]),
            "episode_accuracy": mean_accuracy(episode.accuracies),
            "density": float(step.info["density"]),
            "diverged": self.diverged,
            "policy_version": self.policy.policy_version,
        }
        return episode, step


def mean_accuracy(accuracies: Sequence[float]) -> float:
    """The mean of ``accuracies`` (``nan`` when empty)."""
    return sum(accuracies) / len(accuracies) if accuracies else float("nan")


def _check_length(length: int) -> None:
    if length < 1:
        raise ValueError(f"an episode needs ≥ 1 surgery, got {length}")


def _check_credit(credit: Credit | None, length: int) -> None:
    if credit is not None and len(credit) < length:
        raise ValueError(f"{len(credit)} controls for an episode of {length} surgeries")


def rollout(
    organism: Organism,
    step: OrganismStep,
    policy: EmrakulPolicy,
    length: int,
    on_step: Callable[[OrganismStep], None] | None = None,
    credit: Credit | None = None,
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
        credit: Measures each reward against a control twin
            (:class:`esper.policies.credit.Credit`, ``≥ length`` controls). ``None``: raw
            rewards.

    Returns:
        The episode and the organism's last step.
    """
    _check_length(length)
    _check_credit(credit, length)
    builder = _EpisodeBuilder(organism, step, policy, credit)
    for _ in range(length):
        nxt = organism.step(builder.decide(), data=policy.data_action())
        if on_step is not None:
            on_step(nxt)
        if builder.observe(nxt):
            break
    return builder.finish()


def cohort_rollout(
    cohort: Cohort,
    steps: Sequence[OrganismStep],
    policies: Sequence[EmrakulPolicy],
    length: int,
    on_step: Callable[[int, OrganismStep], None] | None = None,
    credits: Sequence[Credit] | None = None,
) -> list[tuple[Episode, OrganismStep]]:
    """:func:`rollout` on every member of ``cohort`` at once: each member's policy copy decides
    on its own member's step, then the cohort trains all members together.

    A member that diverges ends its episode there (as alone); it is kept in the cohort without
    surgery until the episode ends, its later steps unrecorded (the caller replaces it).

    Args:
        cohort: The members, already reset.
        steps: Each member's latest step.
        policies: One acting policy per member (each reset on its member).
        length: Surgeries in the episode (``≥ 1``).
        on_step: Called with ``(member index, step)`` for every recorded step.
        credits: Per member, its credit (as for :func:`rollout`); ``None``: raw rewards.

    Returns:
        Per member, its episode and its last recorded step.
    """
    _check_length(length)
    per_member: Sequence[Credit | None] = credits if credits is not None else [None] * len(policies)
    for c in per_member:
        _check_credit(c, length)
    builders = [
        _EpisodeBuilder(m, s, p, c)
        for m, s, p, c in zip(cohort.members, steps, policies, per_member, strict=True)
    ]
    for _ in range(length):
        actions = [{} if b.diverged else b.decide() for b in builders]
        for i, (builder, nxt) in enumerate(zip(builders, cohort.step(actions), strict=True)):
            if builder.diverged:
                continue
            if on_step is not None:
                on_step(i, nxt)
            builder.observe(nxt)
        if all(b.diverged for b in builders):
            break
    return [b.finish() for b in builders]
