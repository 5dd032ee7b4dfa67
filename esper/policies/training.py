"""Training Emrakul on organisms: the loop behind ``esper train-policy``.

:func:`train_policy` builds one organism per workload, then repeats: pick the next organism
(round robin), roll the ``emrakul`` policy out on it for ``rollout`` surgeries (one episode of
the policy; the organism itself lives on across episodes), and update the learners.

* ``mappo``: the Specialists and the Surgeon General each have a :class:`MAPPOLearner`; the
  Specialists store one step per surgery with the organism's team reward
  ``R = α·Acc − β·FLOPs − γ·Osc + δ·GSNR − ε·Spike``; the General stores one step per decision
  with the reward summed over the ``M`` surgeries it governed. Episodes bootstrap from the
  critic's value of the last state (the organism does not end), except after divergence.
* ``qmix``: the Specialists act through the discrete table (``decode_discrete``) with a
  :class:`~esper.policies.learners.qmix.QMIXLearner` (one gradient step per surgery); the
  General stays on MAPPO.

A diverged organism (NaN/Inf loss) ends its episode with ``done`` and is rebuilt from its
config. :func:`save_checkpoint` writes the result atomically; :func:`load_policy` restores a
ready-to-act policy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from esper.conf import compose
from esper.config import EsperConfig
from esper.files import atomic_write
from esper.policies.base import Policy, make_policy
from esper.policies.emrakul.actions import N_DISCRETE_ACTIONS
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.imitation import behaviour_clone, collect_rigl_demonstrations
from esper.policies.learners.mappo import MAPPOLearner
from esper.seeding import derive_seed
from esper.threads import one_thread
from esper.workloads.organism import Organism, OrganismStep, build_organism

__all__ = ["LEARNERS", "TrainResult", "load_policy", "save_checkpoint", "train_policy"]

LEARNERS = ("mappo", "qmix")
"""Learners :func:`train_policy` accepts."""

_CHECKPOINT_VERSION = 1


@dataclass
class TrainResult:
    """What :func:`train_policy` returns.

    Attributes:
        policy: The trained policy (greedy off; set ``policy.greedy = True`` to evaluate).
        checkpoint: Everything :func:`save_checkpoint` writes: ``version``, ``policy`` (name,
            params, state), ``learners`` (their state dicts), ``config`` (each organism's config
            as a plain dict), ``learner``, ``surgeries`` and ``history``.
        history: One metrics dict per episode: ``episode``, ``surgery`` (total so far),
            ``workload``, ``surgeries`` (this episode's; fewer if it diverged),
            ``mean_reward``, the mean reward components ``r_accuracy`` … ``r_spike``,
            ``online_accuracy``, ``density``, ``diverged``, ``policy_version`` and the
            learners' losses (``specialists/…``, ``general/…``). With imitation, a first entry
            (``episode`` −1) reports behaviour cloning.
    """

    policy: EmrakulPolicy
    checkpoint: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def _configs(cfg: EsperConfig, workloads: Sequence[str | EsperConfig] | None) -> list[EsperConfig]:
    if not workloads:
        return [cfg]
    out = []
    for w in workloads:
        if isinstance(w, EsperConfig):
            out.append(w)
        else:  # the named preset replaces cfg's workload group; the other groups stay
            out.append(dataclasses.replace(cfg, workload=compose([f"workload={w}"]).workload))
    return out


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
        learner: str,
        learner_params: Mapping[str, Any],
        seed: int,
        on_step: StepObserver | None = None,
    ) -> None:
        self.configs = configs
        self.on_step = on_step
        self.policy = policy
        self.learner = learner
        self.seed = seed
        self.organisms = [build_organism(c, replica_id=i) for i, c in enumerate(configs)]
        self.steps: list[OrganismStep] = [o.reset() for o in self.organisms]
        for i, (o, s) in enumerate(zip(self.organisms, self.steps, strict=True)):
            self._observe(i, o, s)
        self.rebuilds = [0] * len(configs)
        policy.reset(self.organisms[0], self.steps[0])
        assert policy.specialist is not None and policy.general is not None
        state_dim = policy.general.state_dim
        params = dict(learner_params)
        general_params = params if learner == "mappo" else {}
        self.general = MAPPOLearner(
            policy.general, state_dim, 1, seed=derive_seed(seed, "mappo", "general"),
            **general_params,
        )  # fmt: skip
        self.qmix: Any = None
        if learner == "mappo":
            self.specialists: MAPPOLearner | None = MAPPOLearner(
                policy.specialist, state_dim, policy.max_layers,
                seed=derive_seed(seed, "mappo", "specialists"), **params,
            )  # fmt: skip
        else:
            from esper.policies.learners.qmix import QMIXLearner

            self.specialists = None
            self.qmix = QMIXLearner(
                policy.specialist.obs_dim, state_dim, N_DISCRETE_ACTIONS, policy.max_layers,
                seed=derive_seed(seed, "qmix", "specialists"), **params,
            )  # fmt: skip
            policy.discrete = True
            policy.q_agent = self.qmix

    def _observe(self, i: int, organism: Organism, step: OrganismStep) -> None:
        if self.on_step is not None:
            self.on_step(i, organism, step)

    def _rebuild(self, i: int) -> None:
        self.rebuilds[i] += 1
        replica = derive_seed(self.seed, "rebuild", i, self.rebuilds[i]) % 1000 + len(self.configs)
        self.organisms[i] = build_organism(self.configs[i], replica_id=replica)
        self.steps[i] = self.organisms[i].reset()
        self._observe(i, self.organisms[i], self.steps[i])

    def episode(self, i: int, length: int) -> dict[str, Any]:
        """Roll out ``length`` surgeries on organism ``i``, then update; returns metrics."""
        org, step, policy = self.organisms[i], self.steps[i], self.policy
        policy.reset(org, step)
        rewards: list[float] = []
        components: list[dict[str, float]] = []
        pending: list[Any] = []  # the General's open decision: state, action, log-prob, reward
        diverged = False
        ids = torch.arange(len(org.scalpel.names))
        qmix_losses: list[float] = []
        for _ in range(length):
            actions = policy.decide(org, step, explore=True)
            d = policy.last
            assert d is not None
            if d.general_raw is not None:
                self._close_general(pending, done=False)
                pending = [d.state, d.general_raw, d.general_log_prob, 0.0]
            nxt = org.step(actions)
            self._observe(i, org, nxt)
            diverged = bool(nxt.info["diverged"])
            reward = nxt.reward if not diverged else -1.0
            rewards.append(reward)
            if nxt.components is not None:
                components.append(dataclasses.asdict(nxt.components))
            if pending:
                pending[3] += reward
            if self.specialists is not None:
                self.specialists.store(d.obs, d.ids, d.state, d.raw, d.log_prob, reward, diverged)
            else:
                next_obs = torch.stack([nxt.observations[n].to_tensor() for n in d.layers])
                self.qmix.store(d.obs, d.ids, d.state, d.raw, reward, next_obs,
                                nxt.global_state.to_tensor(), diverged)  # fmt: skip
                qmix_losses.append(self.qmix.update().get("loss", float("nan")))
            step = nxt
            if diverged:
                break
        last_state = None if diverged else step.global_state.to_tensor().float()
        self._close_general(pending, done=diverged)
        self.general.finish_path(last_state, torch.zeros(1, dtype=torch.long))
        metrics: dict[str, Any] = {}
        if self.specialists is not None:
            self.specialists.finish_path(last_state, ids)
            metrics.update({f"specialists/{k}": v for k, v in self.specialists.update().items()})
        else:
            finite = [x for x in qmix_losses if x == x]
            metrics["specialists/loss"] = sum(finite) / len(finite) if finite else float("nan")
        metrics.update({f"general/{k}": v for k, v in self.general.update().items()})
        policy.bump_version()
        if diverged:
            self._rebuild(i)
        else:
            self.steps[i] = step
        out: dict[str, Any] = {
            "surgeries": len(rewards),
            "mean_reward": sum(rewards) / max(len(rewards), 1),
            "online_accuracy": float(step.info["online_accuracy"]),
            "density": float(step.info["density"]),
            "diverged": diverged,
            "policy_version": policy.policy_version,
        }
        for key in ("accuracy", "flops", "oscillation", "gsnr", "spike"):
            values = [c[key] for c in components]
            out[f"r_{key}"] = sum(values) / len(values) if values else float("nan")
        out.update(metrics)
        return out

    def _close_general(self, pending: list[Any], done: bool) -> None:
        if pending:
            state, action, log_prob, reward = pending
            self.general.store(
                state.unsqueeze(0), torch.zeros(1, dtype=torch.long), state,
                action.unsqueeze(0), log_prob.reshape(1), reward, done,
            )  # fmt: skip
            pending.clear()

    def learner_states(self) -> dict[str, Any]:
        specialists = self.specialists if self.specialists is not None else self.qmix
        return {"specialists": specialists.state_dict(), "general": self.general.state_dict()}


def train_policy(
    cfg: EsperConfig,
    workloads: Sequence[str | EsperConfig] | None = None,
    surgeries: int = 64,
    learner: str = "mappo",
    progress: Callable[[dict[str, Any]], None] | None = None,
    seed: int | None = None,
    rollout: int = 16,
    policy_params: Mapping[str, Any] | None = None,
    learner_params: Mapping[str, Any] | None = None,
    imitation: int = 0,
    on_step: StepObserver | None = None,
) -> TrainResult:
    """Train the ``emrakul`` policy on organisms for a budget of surgeries.

    Args:
        cfg: The composed config: reward weights, density budget (``policy.density``),
            surgery interval ``K`` and, when ``workloads`` is empty, the workload.
        workloads: Workload preset names (each replaces ``cfg.workload``) or whole configs;
            ``None`` trains on ``cfg`` alone. Organisms take turns, one episode each.
        surgeries: Total surgeries over all organisms (the training budget).
        learner: ``mappo`` or ``qmix`` (Specialists; the General always uses MAPPO).
        progress: Called after every episode with its metrics dict.
        seed: Seed of the policy and learners (``None``: ``cfg.experiment.seed``).
        rollout: Surgeries per episode (one learner update per episode).
        policy_params: ``EmrakulPolicy`` parameters (``None``: ``cfg.policy.params`` when
            ``cfg.policy.name`` is ``emrakul``, else defaults).
        learner_params: Keyword arguments of the Specialists' learner (``MAPPOLearner`` or
            ``QMIXLearner``, e.g. ``lr``); with MAPPO they also apply to the General's.
        imitation: Surgeries of RigL demonstrations per organism before RL; the Specialists
            are behaviour-cloned on them first (:mod:`esper.policies.imitation`; MAPPO only).
        on_step: Called as ``on_step(i, organism, step)`` with every step of organism ``i``
            (its first reading and each surgery): where a run recorder writes events.

    Raises:
        ValueError: an unknown learner or a non-positive budget.
    """
    if learner not in LEARNERS:
        raise ValueError(f"unknown learner {learner!r}; valid learners: {', '.join(LEARNERS)}")
    if surgeries < 1 or rollout < 1:
        raise ValueError(f"surgeries={surgeries} and rollout={rollout} must be ≥ 1")
    if imitation < 0 or (imitation and learner != "mappo"):
        raise ValueError(
            f"imitation={imitation} must be ≥ 0, and only the mappo learner has the continuous "
            "Specialist actor that behaviour cloning trains"
        )
    seed = cfg.experiment.seed if seed is None else seed
    if policy_params is None:
        policy_params = dict(cfg.policy.params) if cfg.policy.name == "emrakul" else {}
    params = {"seed": derive_seed(seed, "emrakul") % (2**31), **dict(policy_params)}
    policy = make_policy("emrakul", **params)
    assert isinstance(policy, EmrakulPolicy)
    configs = _configs(cfg, workloads)
    history: list[dict[str, Any]] = []
    with one_thread():
        trainer = _Trainer(configs, policy, learner, learner_params or {}, seed, on_step)
        if imitation:
            history.append(_warm_start(trainer, imitation, surgeries, seed))
            if progress is not None:
                progress(history[-1])
        done, episode = 0, 0
        while done < surgeries:
            i = episode % len(configs)
            length = min(rollout, surgeries - done)
            metrics = trainer.episode(i, length)
            done += metrics["surgeries"]
            metrics = {"episode": episode, "surgery": done,
                       "workload": _workload_name(configs[i]), **metrics}  # fmt: skip
            history.append(metrics)
            if progress is not None:
                progress(metrics)
            episode += 1
    checkpoint = {
        "version": _CHECKPOINT_VERSION,
        "policy": {
            "name": policy.name,
            "params": dict(policy.params),
            "state": policy.state_dict(),
        },
        "learners": trainer.learner_states(),
        "learner": learner,
        "config": [
            OmegaConf.to_container(OmegaConf.structured(c), enum_to_str=True) for c in configs
        ],
        "surgeries": surgeries,
        "history": history,
    }
    return TrainResult(policy, checkpoint, history)


def _warm_start(trainer: _Trainer, imitation: int, surgeries: int, seed: int) -> dict[str, Any]:
    """Behaviour-clone the Specialists on RigL demonstrations from the training organisms."""
    policy = trainer.policy
    assert policy.specialist is not None
    t_end = max(1, int(0.75 * (imitation + surgeries / len(trainer.organisms))))
    demos = collect_rigl_demonstrations(
        trainer.organisms, trainer.steps, imitation, t_end, policy.codec,
        seed=derive_seed(seed, "imitation"),
    )  # fmt: skip
    losses = behaviour_clone(policy.specialist, demos, seed=derive_seed(seed, "bc"))
    policy.bump_version()
    return {"episode": -1, "surgery": 0, "imitation_samples": len(demos), "bc_loss": losses[-1],
            "policy_version": policy.policy_version}  # fmt: skip


def save_checkpoint(path: str | os.PathLike[str], result: TrainResult | Mapping[str, Any]) -> Path:
    """Write ``result``'s checkpoint with ``torch.save``, atomically (temp file, then rename).

    Returns:
        The path written.
    """
    target = Path(path)
    checkpoint = result.checkpoint if isinstance(result, TrainResult) else dict(result)
    atomic_write(target, lambda tmp: torch.save(checkpoint, tmp))
    return target


def load_policy(path: str | os.PathLike[str], greedy: bool = True) -> Policy:
    """The policy saved by :func:`save_checkpoint`, ready to act (greedy by default).

    A QMIX-trained policy acts through its restored Q network. The file is unpickled
    (``weights_only=False``): load only checkpoints you trust.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an Emrakul checkpoint, or another checkpoint version.
    """
    checkpoint = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or checkpoint.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(f"{path} is not an Emrakul policy checkpoint (version 1)")
    saved = checkpoint["policy"]
    policy = make_policy(saved["name"], **saved["params"])
    policy.load_state_dict(saved["state"])
    if isinstance(policy, EmrakulPolicy):
        policy.greedy = greedy
        if checkpoint.get("learner") == "qmix":
            policy.q_agent = _restore_qmix(policy, checkpoint["learners"]["specialists"])
            policy.discrete = True
    return policy


def _restore_qmix(policy: EmrakulPolicy, state: Mapping[str, Any]) -> Any:
    from esper.policies.learners.qmix import QMIXLearner

    assert policy.specialist is not None and policy.general is not None
    config = dict(state.get("config", {}))
    learner = QMIXLearner(
        policy.specialist.obs_dim, policy.general.state_dim, N_DISCRETE_ACTIONS, policy.max_layers,
        **{k: v for k, v in config.items()
           if k not in ("obs_dim", "state_dim", "n_actions", "max_agents")},
    )  # fmt: skip
    learner.load_state_dict(dict(state))
    return learner
