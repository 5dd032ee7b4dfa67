"""Imitation warm start: behaviour cloning of the Specialists from RigL's decisions.

RigL (Evci et al. 2020, arXiv 1911.11134) drops the ``f_t`` smallest-``|w|`` active weights of
each layer and regrows as many inactive weights with the largest dense ``|∂L/∂w|``, with the
cosine drop fraction ``f_t = α/2 · (1 + cos(π t / T_end))`` (``α = 0.3``) and no update after
``T_end``. In the Specialists' action space that is: turnover ``f_t``, pruning mix all on
``magnitude``, regrowth mix all on ``gradient``, a near-zero Gumbel temperature, no sedation
and no heat. :func:`collect_rigl_demonstrations` rolls organisms forward under exactly these
surgeries and records each layer's observation with the encoded target;
:func:`behaviour_clone` regresses the shared actor's Gaussian means on the targets, leaving the
exploration noise alone so RL fine-tuning can start from it.

The Bernoulli bits (heat burst, FGSF's forget, protection) are not cloned by default: RigL has
no such actions, so "never" is not its choice but its lack of the option, and cloning it drives
their logits so low that RL never tries them (trained this way, Emrakul set no heat in 1,920
recorded decisions, ``benchmarks/results/strategies.json``). They keep the actor's prior (rare,
``p ≈ 0.05``) for RL to raise or lower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from esper.policies.emrakul.actions import SpecialistAction, layer_action
from esper.policies.emrakul.specialist import ActionCodec, SpecialistActor
from esper.seeding import derive_seed, generator
from esper.workloads.organism import Organism, OrganismStep

if TYPE_CHECKING:
    from esper.policies.emrakul.policy import EmrakulPolicy

__all__ = [
    "IMITATION_HORIZON",
    "Demonstrations",
    "behaviour_clone",
    "check_imitation",
    "collect_rigl_demonstrations",
    "rigl_action",
    "rigl_drop_fraction",
    "warm_start",
]

IMITATION_HORIZON = 0.75
"""RigL's drop fraction anneals to zero over this fraction of each organism's surgeries
(Evci et al. 2020 stop updating the mask at 75% of training)."""

RIGL_TAU = 1e-3
"""Temperature standing for RigL's deterministic top-k in the Specialists' action space."""


def rigl_drop_fraction(t: int, t_end: int, alpha: float = 0.3) -> float:
    """RigL's cosine drop fraction ``α/2 · (1 + cos(π t / T_end))``, 0 from ``T_end`` on."""
    if t_end < 1 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"need t_end ≥ 1 ({t_end}) and alpha in [0, 1] ({alpha})")
    if t >= t_end:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * t / t_end))


def rigl_action(drop_fraction: float, tau: float = RIGL_TAU) -> SpecialistAction:
    """RigL's update as a :class:`SpecialistAction`: magnitude drop, gradient growth."""
    return SpecialistAction(
        turnover=drop_fraction,
        prune_mix=(1.0, 0.0, 0.0, 0.0, 0.0),
        regrow_mix=(1.0, 0.0, 0.0),
        tau=tau,
    )


@dataclass
class Demonstrations:
    """Behaviour-cloning data: one row per (surgery, layer).

    Attributes:
        obs: ``[N, obs_dim]`` layer observations.
        ids: ``[N]`` layer indices.
        targets: ``[N, ActionCodec.WIDTH]`` encoded RigL actions.
    """

    obs: torch.Tensor
    ids: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def split(self, fraction: float) -> tuple[Demonstrations, Demonstrations]:
        """The first ``fraction`` of rows and the rest (held out)."""
        n = round(fraction * len(self))
        return (
            Demonstrations(self.obs[:n], self.ids[:n], self.targets[:n]),
            Demonstrations(self.obs[n:], self.ids[n:], self.targets[n:]),
        )


def collect_rigl_demonstrations(
    organisms: Sequence[Organism],
    steps: list[OrganismStep],
    surgeries: int,
    t_end: int,
    codec: ActionCodec,
    alpha: float = 0.3,
    seed: int = 0,
) -> Demonstrations:
    """Run RigL's surgeries on each organism for ``surgeries`` and record the targets.

    Args:
        organisms: Organisms, already reset.
        steps: Their latest steps; updated in place as the organisms advance.
        surgeries: Surgeries per organism.
        t_end: RigL's ``T_end``, in surgeries.
        codec: Encodes targets in the actor's raw action space.
        alpha: RigL's initial drop fraction.
        seed: Seed of the (unused at ``τ → 0``) Gumbel stream.
    """
    if len(organisms) != len(steps):
        raise ValueError(f"{len(organisms)} organisms but {len(steps)} steps")
    gen = generator(seed, "imitation")
    obs, ids, targets = [], [], []
    for i, org in enumerate(organisms):
        for t in range(surgeries):
            step = steps[i]
            action = rigl_action(rigl_drop_fraction(t, t_end, alpha))
            target = codec.encode(action)
            actions = {}
            for j, name in enumerate(org.scalpel.names):
                obs.append(step.observations[name].to_tensor().float())
                ids.append(j)
                targets.append(target)
                actions[name] = layer_action(
                    SpecialistAction(turnover=action.turnover, tau=0.0), org, step, name, gen
                )
            steps[i] = org.step(actions)
    return Demonstrations(torch.stack(obs), torch.tensor(ids), torch.stack(targets))


def behaviour_clone(
    actor: SpecialistActor,
    data: Demonstrations,
    epochs: int = 300,
    lr: float = 1e-2,
    batch_size: int = 256,
    seed: int = 0,
    clone_bits: bool = False,
) -> list[float]:
    """Fit the actor's means to the demonstrations; returns epoch losses.

    The loss is the mean squared error of the Gaussian means against the encoded targets (plus,
    with ``clone_bits``, the binary cross-entropy of the Bernoulli bits against RigL's "never");
    the log standard deviations are not trained, nor, without ``clone_bits``, the head's rows
    of the bits (the trunk they read is).
    """
    if epochs < 1 or batch_size < 1 or lr <= 0 or not len(data):
        raise ValueError(
            f"need epochs ≥ 1 ({epochs}), batch_size ≥ 1 ({batch_size}), lr > 0 ({lr}) and "
            f"demonstrations ({len(data)})"
        )
    params = [p for n, p in actor.named_parameters() if n != "log_std"]
    optimizer = torch.optim.Adam(params, lr=lr)
    c = ActionCodec.CONTINUOUS
    gen = generator(seed, "behaviour_clone")
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for start in range(0, len(data), batch_size):
            idx = order[start : start + batch_size]
            dist = actor.distribution(data.obs[idx], data.ids[idx])
            assert dist.logits is not None
            loss = F.mse_loss(dist.mean, data.targets[idx, :c])
            if clone_bits:
                loss = loss + F.binary_cross_entropy_with_logits(dist.logits, data.targets[idx, c:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.numel()
        losses.append(total / len(data))
    return losses


def check_imitation(imitation: int, learner: str) -> None:
    """``policy.training.imitation``: RigL surgeries per organism, cloned into the continuous
    Specialist actor before RL, which only a learner of that actor (``mappo``) starts from.
    An unknown learner is left to the learner's own check.

    Raises:
        ValueError: a negative count, or imitation with a learner of no continuous actor.
    """
    from esper.policies.learners import LEARNERS

    actor = learner not in LEARNERS or LEARNERS[learner].trains_actor
    if imitation < 0 or (imitation and not actor):
        raise ValueError(
            f"policy.training.imitation={imitation} must be ≥ 0, and only a learner of the "
            f"continuous Specialist actor (mappo) starts from behaviour cloning, not "
            f"policy.training.learner={learner}"
        )


def warm_start(
    policy: EmrakulPolicy,
    organisms: Sequence[Organism],
    steps: list[OrganismStep],
    surgeries: int,
    trained: float,
    seed: int,
) -> dict[str, Any]:
    """Behaviour-clone ``policy``'s Specialists on RigL's surgeries of ``organisms``, the
    imitation warm start before RL, shared by the in-process trainer
    (:func:`esper.policies.training.train_policy`) and the platform's learner
    (:class:`esper.platform.population.Population`), so both start from the same clone.

    Args:
        policy: The built Emrakul policy; its version is bumped.
        organisms: The organisms, already reset; each advances ``surgeries`` under RigL.
        steps: Their latest steps (updated in place).
        surgeries: RigL surgeries per organism.
        trained: RL surgeries each organism will see after the warm start: RigL's ``T_end``
            is :data:`IMITATION_HORIZON` of ``surgeries + trained``.
        seed: The training seed (the demonstrations and the cloning derive theirs from it).

    Returns:
        What to log: ``imitation_samples``, ``bc_loss`` (the last epoch's) and the
        ``policy_version`` after the clone.
    """
    assert policy.specialist is not None, "the policy is not built"
    t_end = max(1, int(IMITATION_HORIZON * (surgeries + trained)))
    demos = collect_rigl_demonstrations(
        organisms, steps, surgeries, t_end, policy.codec, seed=derive_seed(seed, "imitation")
    )
    losses = behaviour_clone(policy.specialist, demos, seed=derive_seed(seed, "bc"))
    policy.bump_version()
    return {"imitation_samples": len(demos), "bc_loss": losses[-1],
            "policy_version": policy.policy_version}  # fmt: skip
