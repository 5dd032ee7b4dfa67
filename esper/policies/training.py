"""Training Emrakul on organisms: the loop behind ``esper train-policy``.

:func:`train_policy` builds one organism per config, then repeats: pick the next organism
(round robin), roll the ``emrakul`` policy out on it for ``rollout`` surgeries (one episode of
the policy; the organism itself lives on across episodes), and update the learners.

* The Specialists learn with the learner named by ``policy.training.learner`` (any entry of
  :data:`~esper.policies.learners.LEARNERS`, behind one protocol): each surgery is one
  :class:`~esper.policies.learners.Transition` with the organism's team reward
  ``R = α·Acc − β·FLOPs − γ·Osc + δ·GSNR − ε·Spike``, and the learner updates at the end of
  every episode, bootstrapping from the last state (the organism does not end) except after
  divergence.
* The Surgeon General learns with MAPPO, one step per decision, rewarded with the sum of the
  team rewards of the ``M`` surgeries it governed.
* With a control (``policy.training.control``, e.g. ``rigl``) every organism has a control twin
  that joins it at its first RL episode (a copy of its state) and trains on the same batches
  under that surgeon; each reward's accuracy term is measured against the twin's
  (:mod:`esper.policies.credit`). A twin lives as long as its organism; a diverged twin is
  replaced by a new copy of its organism at the next episode.

A diverged organism (NaN/Inf loss) ends its episode with ``done``, earns
:data:`~esper.workloads.reward.DIVERGED_REWARD` for that surgery, and is rebuilt from its config
as a new replica. Checkpoints: :mod:`esper.policies.checkpoints`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from esper.config import EsperConfig, TrainingConfig
from esper.policies.base import make_policy
from esper.policies.central import CentralLearner
from esper.policies.credit import check_control, check_credit
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.imitation import check_imitation, warm_start
from esper.policies.learners import LEARNERS
from esper.policies.reference import ReferenceTwins
from esper.policies.rollout import rollout
from esper.seeding import derive_seed, small_seed
from esper.threads import one_thread
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep

__all__ = ["StepObserver", "TrainResult", "learner_policy", "train_policy"]

_REPLICA_SPACE = 1 << 20
"""Replica ids of rebuilt organisms are drawn from ``[n, n + 2²⁰)`` (``n`` organisms), so they
never collide with the original replicas and practically never with each other."""


@dataclass
class TrainResult:
    """What :func:`train_policy` returns.

    Attributes:
        policy: The trained policy (greedy off; set ``policy.greedy = True`` to evaluate).
        learner: The central learner (Specialists' learner and the General's MAPPO).
        configs: The organisms' configs.
        history: One metrics dict per episode: ``episode``, ``surgery`` (total so far),
            ``workload``, ``surgeries`` (this episode's; fewer if it diverged),
            ``mean_reward``, the mean reward components ``r_accuracy`` … ``r_spike``,
            ``online_accuracy``, ``density``, ``diverged``, ``policy_version`` and the
            learners' losses (``specialists/…``, ``general/…``). With imitation, a first entry
            (``episode`` −1) reports behaviour cloning.
    """

    policy: EmrakulPolicy
    learner: CentralLearner
    configs: list[EsperConfig]
    history: list[dict[str, Any]] = field(default_factory=list)


def _workload_name(cfg: EsperConfig) -> str:
    w = cfg.workload
    drifts = "+".join(d.name for d in w.drifts) or "none"
    return f"{w.dataset.name}/{drifts}/{w.host.name}"


StepObserver = Callable[[int, Organism, OrganismStep], None]
"""``(organism index, organism, step)``: sees every step of every training organism."""


class _Trainer:
    """The state of one training run (kept out of :func:`train_policy` for readability)."""

    def __init__(
        self,
        configs: list[EsperConfig],
        policy: EmrakulPolicy,
        training: TrainingConfig,
        seed: int,
        on_step: StepObserver | None = None,
    ) -> None:
        self.configs = configs
        self.on_step = on_step
        self.policy = policy
        self.seed = seed
        self.organisms = [build_organism(c, replica_id=i) for i, c in enumerate(configs)]
        self.steps: list[OrganismStep] = [o.reset() for o in self.organisms]
        for i, (o, s) in enumerate(zip(self.organisms, self.steps, strict=True)):
            self._observe(i, o, s)
        self.rebuilds = [0] * len(configs)
        self.control, self.credit = training.control, training.credit
        self.twins: list[ReferenceTwins | None] = [None] * len(configs)
        policy.reset(self.organisms[0], self.steps[0])
        self.learner = CentralLearner(policy, training, seed)

    def _observe(self, i: int, organism: Organism, step: OrganismStep) -> None:
        if self.on_step is not None:
            self.on_step(i, organism, step)

    def _rebuild(self, i: int) -> None:
        self.rebuilds[i] += 1
        offset = derive_seed(self.seed, "rebuild", i, self.rebuilds[i]) % _REPLICA_SPACE
        replica = len(self.configs) + offset
        self.organisms[i] = build_organism(self.configs[i], replica_id=replica)
        self.steps[i] = self.organisms[i].reset()
        self.twins[i] = None  # a new twin joins the new organism at its next episode
        self._observe(i, self.organisms[i], self.steps[i])

    def _twin(self, i: int) -> ReferenceTwins:
        """Organism ``i``'s control twin, built (as a copy of the organism) on first use."""
        twin = self.twins[i]
        if twin is None:
            config = self.configs[i]
            twin = ReferenceTwins(
                self.control, lambda rid: build_organism(config, replica_id=rid), [i],
                derive_seed(self.seed, "control", i, self.rebuilds[i]),
            )  # fmt: skip
            twin.sync(0, self.organisms[i])
            self.twins[i] = twin
        return twin

    def episode(self, i: int, length: int) -> dict[str, Any]:
        """Roll out ``length`` surgeries on organism ``i`` (and its control twin), then update;
        returns metrics."""
        organism = self.organisms[i]
        credit, twin_diverged = None, False
        if self.control != "none":
            twins, credits = self._twin(i).rollout_credits(length, [self.steps[i]], self.credit)
            credit, twin_diverged = credits[0], twins[0].diverged
        episode, last = rollout(
            organism, self.steps[i], self.policy, length,
            on_step=lambda step: self._observe(i, organism, step), credit=credit,
        )  # fmt: skip
        metrics = {**episode.metrics, **self.learner.learn([episode])}
        metrics["policy_version"] = self.policy.policy_version
        if twin_diverged:  # a fresh twin joins the (healthy) organism at its next episode
            self.twins[i] = None
        if episode.metrics["diverged"]:
            self._rebuild(i)
        else:
            self.steps[i] = last
        return metrics


def train_policy(
    cfg: EsperConfig,
    organisms: Sequence[EsperConfig] = (),
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_step: StepObserver | None = None,
    on_episode: Callable[[TrainResult], None] | None = None,
) -> TrainResult:
    """Train the ``emrakul`` policy on organisms for ``policy.training.surgeries`` surgeries.

    Args:
        cfg: The composed config: ``policy.training`` (learner, budget, rollout, imitation,
            learner parameters), ``policy.params`` (the Emrakul policy's, when ``policy.name``
            is ``emrakul``), ``experiment.seed`` (policy and learners) and, when
            ``organisms`` is empty, the one organism to train on.
        organisms: One config per training organism (they take turns, one episode each).
        progress: Called after every episode with its metrics dict.
        on_step: Called as ``on_step(i, organism, step)`` with every step of organism ``i``
            (its first reading and each surgery): where a run recorder writes events.
        on_episode: Called after behaviour cloning and after every learner update with the
            result so far (the live policy and learners): where snapshots are saved.

    Raises:
        ValueError: an unknown learner or control, a non-positive budget, or imitation with a
            learner that does not train the continuous Specialist actor.
    """
    training = cfg.policy.training
    if training.learner not in LEARNERS:
        raise ValueError(
            f"unknown learner {training.learner!r}; valid learners: {', '.join(LEARNERS)}"
        )
    if training.surgeries < 1 or training.rollout < 1:
        raise ValueError(
            f"policy.training.surgeries={training.surgeries} and "
            f"policy.training.rollout={training.rollout} must be ≥ 1"
        )
    check_imitation(training.imitation, training.learner)
    check_control(training.control)
    check_credit(training.credit)
    seed = cfg.experiment.seed
    policy = learner_policy(cfg)
    configs = list(organisms) or [cfg]
    history: list[dict[str, Any]] = []
    with one_thread():
        trainer = _Trainer(configs, policy, training, seed, on_step)
        result = TrainResult(policy, trainer.learner, configs, history)
        if training.imitation:
            history.append(_warm_start(trainer, training, seed))
            if progress is not None:
                progress(history[-1])
            if on_episode is not None:
                on_episode(result)
        done, episode = 0, 0
        while done < training.surgeries:
            i = episode % len(configs)
            length = min(training.rollout, training.surgeries - done)
            metrics = trainer.episode(i, length)
            done += metrics["surgeries"]
            metrics = {"episode": episode, "surgery": done,
                       "workload": _workload_name(configs[i]), **metrics}  # fmt: skip
            history.append(metrics)
            if progress is not None:
                progress(metrics)
            if on_episode is not None:
                on_episode(result)
            episode += 1
    return result


def learner_policy(cfg: EsperConfig) -> EmrakulPolicy:
    """The Emrakul policy a training starts from, not yet built: ``policy.params`` when the
    policy group is ``emrakul``, seeded from the training seed unless they name a seed. The
    in-process trainer, every platform member's learner and the clone a sweep exports all make
    theirs here, so one config gives one set of initial weights."""
    params = dict(cfg.policy.params) if cfg.policy.name == "emrakul" else {}
    policy = make_policy("emrakul", **{"seed": small_seed(cfg.experiment.seed, "emrakul"),
                                       **params})  # fmt: skip
    assert isinstance(policy, EmrakulPolicy)
    return policy


def _warm_start(trainer: _Trainer, training: TrainingConfig, seed: int) -> dict[str, Any]:
    """Behaviour-clone the Specialists on RigL demonstrations from the training organisms."""
    per_organism = training.surgeries / len(trainer.organisms)
    logged = warm_start(trainer.policy, trainer.organisms, trainer.steps, training.imitation,
                        per_organism, seed)  # fmt: skip
    return {"episode": -1, "surgery": 0, **logged}
