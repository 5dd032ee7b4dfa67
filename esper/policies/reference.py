"""Reference twins: each organism's double, operated on by a heuristic surgeon.

One iteration's raw online accuracy follows the stream's phase (right after a drift every
member of a sweep drops together), so it cannot rank members. A twin is built from the same
config and replica id as its organism, hence the same seeds: the same stream, initial weights
and masks, trained the same ``K`` steps between surgeries, so it sees exactly the same batches.
A registry policy (``search.reference``: RigL by default, with its own defaults, at the same
density) operates on it. The organism's online accuracy minus its twin's over the same SGD steps
(:func:`relative_accuracy`) measures the surgeon, with the stream's phase taken out: the
control the design asks of PBT's fitness.

The twins' surgeries are not the member's: they are never written to its event log. Their
state (organisms, policies) is saved with the replica's so that a restored replica continues
both exactly. A replica hosting a cohort trains its twins as a cohort too.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from esper.policies.base import POLICIES, Policy, make_policy
from esper.policies.credit import Credit, twin_controls
from esper.policies.rollout import mean_accuracy
from esper.seeding import small_seed
from esper.workloads.cohort import Cohort
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["ReferenceEpisode", "ReferenceTwins", "reference_metrics", "relative_accuracy"]


@dataclass
class ReferenceEpisode:
    """What one twin did during the member's episode.

    Attributes:
        accuracies: Online accuracy of each of its SGD steps, in order.
        diverged: Its host diverged (its later steps are missing).
    """

    accuracies: list[float] = field(default_factory=list)
    diverged: bool = False


def relative_accuracy(member: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """The twin's mean online accuracy and the member's minus it, over the SGD steps both ran
    (the first ``min(len)``; ``nan`` for both when there is none)."""
    n = min(len(member), len(reference))
    if n == 0:
        return float("nan"), float("nan")
    ref = mean_accuracy(reference[:n])
    return ref, mean_accuracy(member[:n]) - ref


def reference_metrics(member: Sequence[float], twin: ReferenceEpisode | None) -> dict[str, float]:
    """An episode's ``reference_accuracy`` (its twin's online accuracy over the same SGD steps)
    and ``relative_accuracy`` (the organism's minus it), from the organism's step accuracies
    ``member``; ``nan`` without a twin or when the twin diverged."""
    if twin is None or twin.diverged:
        return {"reference_accuracy": float("nan"), "relative_accuracy": float("nan")}
    reference, relative = relative_accuracy(member, twin.accuracies)
    return {"reference_accuracy": reference, "relative_accuracy": relative}


class ReferenceTwins:
    """One twin per organism of a replica, each with its own copy of the reference policy.

    Args:
        policy: Registry name of the reference surgeon (its default parameters; a ``seed``
            derived from ``seed`` and the replica id where it takes one).
        build: Builds the organism of a replica id (the replica's own builder, so a twin is
            built exactly as its organism).
        ids: Replica id of each organism.
        seed: Root seed (each twin's policy is seeded from it and its replica id).
        batched: Train the twins as one :class:`~esper.workloads.cohort.Cohort`.

    Raises:
        ValueError: ``policy`` is unknown, or prunes from dense (a twin starts at the
            member's density).
    """

    def __init__(
        self,
        policy: str,
        build: Callable[[int], Organism],
        ids: Sequence[int],
        seed: int,
        batched: bool = False,
    ) -> None:
        if policy in POLICIES and POLICIES[policy].prunes_from_dense:
            raise ValueError(
                f"reference policy {policy!r} prunes from dense; a twin starts at the member's "
                "density: choose a surgeon that holds it (rigl, set, static, ...)"
            )
        self.policy_name = policy
        self.seed = seed
        self._build = build
        self.ids = list(ids)
        self.organisms: list[Organism] = []
        self.policies: list[Policy] = []
        self.steps: list[OrganismStep] = []
        for rid in self.ids:
            organism, surgeon, step = self._fresh(rid)
            self.organisms.append(organism)
            self.policies.append(surgeon)
            self.steps.append(step)
        self.cohort = Cohort(self.organisms) if batched else None

    def _fresh(self, replica_id: int) -> tuple[Organism, Policy, OrganismStep]:
        organism = self._build(replica_id)
        seeded = "seed" in inspect.signature(POLICIES[self.policy_name]).parameters
        seed = {"seed": small_seed(self.seed, "reference", replica_id)} if seeded else {}
        surgeon = make_policy(self.policy_name, **seed)
        step = organism.reset()
        surgeon.reset(organism, step)  # once: the twin lives as long as its organism
        return organism, surgeon, step

    def rollout(self, length: int) -> list[ReferenceEpisode]:
        """``length`` surgeries of every twin (the member's episode length); a twin that
        diverges stops there."""
        episodes = [ReferenceEpisode() for _ in self.organisms]
        for _ in range(length):
            live = [i for i, e in enumerate(episodes) if not e.diverged]
            if not live:
                break
            actions = [
                self.policies[i].act(o, self.steps[i]) if i in live else {}
                for i, o in enumerate(self.organisms)
            ]
            if self.cohort is not None:
                results = self.cohort.step(actions)
            else:
                results = list(self.steps)
                for i in live:
                    data = self.policies[i].data_action()
                    results[i] = self.organisms[i].step(actions[i], data=data)
            for i in live:
                step = self.steps[i] = results[i]
                self.policies[i].observe(self.organisms[i], step)
                episodes[i].accuracies.extend(step.info["accuracies"])
                episodes[i].diverged = bool(step.info["diverged"])
        return episodes

    def sync(self, i: int, organism: Organism) -> None:
        """Twin ``i`` takes a copy of ``organism``'s present state (host, optimizer, masks,
        stream position, generators) and its surgeon starts afresh on it: from here on the two
        train on the same batches (how a twin joins an organism that has already lived, e.g.
        after the imitation warm start)."""
        twin = self.organisms[i]
        twin.load_state_dict(copy.deepcopy(organism.state_dict()))
        if self.cohort is not None:
            self.cohort.replace(i, twin)
        self.steps[i] = twin.current()
        self.policies[i].reset(twin, self.steps[i])

    def rollout_credits(
        self, length: int, steps: Sequence[OrganismStep], form: str
    ) -> tuple[list[ReferenceEpisode], list[Credit]]:
        """:meth:`rollout` the twins first, and return with their episodes each organism's
        :class:`~esper.policies.credit.Credit` for its own episode of ``length`` surgeries
        (``steps``: each organism's latest step, before the episode)."""
        twins_before = [mean_accuracy(s.info["accuracies"]) for s in self.steps]
        episodes = self.rollout(length)
        credits = []
        for episode, step, twin_before, organism in zip(
            episodes, steps, twins_before, self.organisms, strict=True
        ):
            controls = twin_controls(episode.accuracies, length, organism.K)
            before = (mean_accuracy(step.info["accuracies"]), twin_before)
            credits.append(Credit(controls, organism.reward_weights.alpha, form, before))
        return episodes, credits

    def rebuild(self, i: int, replica_id: int) -> None:
        """A new twin for organism ``i``, rebuilt as replica ``replica_id``."""
        self.ids[i] = replica_id
        self.organisms[i], self.policies[i], self.steps[i] = self._fresh(replica_id)
        if self.cohort is not None:
            self.cohort.replace(i, self.organisms[i])

    def state_dict(self) -> dict[str, Any]:
        """Every twin's organism and policy, and its replica id."""
        return {
            "policy": self.policy_name,
            "ids": list(self.ids),
            "organisms": [o.state_dict() for o in self.organisms],
            "policies": [p.state_dict() for p in self.policies],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every twin from :meth:`state_dict` output."""
        if state["policy"] != self.policy_name or len(state["ids"]) != len(self.ids):
            raise ValueError(
                f"the state holds {len(state['ids'])} {state['policy']!r} twins, this replica "
                f"{len(self.ids)} {self.policy_name!r} twins (search.reference or "
                "policy.training.cohort differs)"
            )
        for i in range(len(self.ids)):
            self.load_one(i, state)

    def load_one(self, i: int, state: Mapping[str, Any]) -> None:
        """Restore twin ``i`` from :meth:`state_dict` output (rebuilt first if the state is
        of another replica id)."""
        rid = int(state["ids"][i])
        if rid != self.ids[i]:
            self.rebuild(i, rid)
        self.organisms[i].load_state_dict(state["organisms"][i])
        self.policies[i].load_state_dict(state["policies"][i])
        self.steps[i] = self.organisms[i].current()
