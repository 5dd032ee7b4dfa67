"""A sweep member's policy as a policy checkpoint: what the platform trained, in the form that
``esper evaluate checkpoint=PATH`` and the benchmarks open.

A member checkpoint (``member.pt``, kind ``member``: :mod:`esper.platform.trainable`) is the whole
member, its replicas' organisms included, so that PBT's exploit can copy it. A policy checkpoint
(kind ``policy``: :mod:`esper.policies.checkpoints`) is the policy and its learners only.
:func:`export_member_policy` rebuilds the member's central learner (Emrakul's networks, the
Specialists' learner, the Surgeon General's MAPPO) from the member state, as the member built it
from its config, and writes it in the layout of
:func:`~esper.policies.checkpoints.policy_checkpoint`, so that
:func:`~esper.policies.checkpoints.load_policy` returns a policy that acts as the member's did.

The payload's ``config`` lists the member's replicas' configs, ``history`` the member's own
learning-curve rows up to the checkpoint (:mod:`esper.events.learning`; empty when the checkpoint
lies outside its run directory), ``surgeries`` is :func:`member_surgeries`, and ``provenance``
says where it came from (:func:`member_policy`).

:func:`best_member` and :func:`member_checkpoint` find a member's latest checkpoint in a run
directory: a sweep's (``RUN/tune/<trial>/checkpoint_N/member.pt``) or ``esper run``'s
(``RUN/member.pt``, member ``t0``). Of Tune's experiment only the trials' ``result.json`` (JSON
lines) is read, never its pickles, so an unsigned sweep is as safe to export from as a signed one
(:mod:`esper.platform.trust`); the members are ranked by :func:`~esper.platform.sweep.collect`,
as the sweep's leaderboard ranks them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esper.checkpoint import CheckpointError, load_checkpoint
from esper.conf import ConfigError, from_plain
from esper.config import HP_PREFIX, EsperConfig, searched_values
from esper.events.learning import read_learning_curves
from esper.platform.fitness import Fitness
from esper.platform.population import imitation_warm_start, replica_configs
from esper.platform.sweep import TUNE_DIR, collect
from esper.platform.trainable import CHECKPOINT_FILE, KIND, load_member_checkpoint
from esper.policies.base import make_policy
from esper.policies.central import CentralLearner
from esper.policies.checkpoints import policy_checkpoint, save_policy
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.training import TrainResult, learner_policy

__all__ = [
    "RUN_MEMBER",
    "best_member",
    "export_member_policy",
    "imitation_policy",
    "member_checkpoint",
    "member_policy",
    "member_surgeries",
    "sweep_members",
]

RUN_MEMBER = "t0"
"""The member of an ``esper run`` directory (its checkpoint is ``RUN/member.pt``)."""

_RESULTS = "result.json"
"""Tune's per-trial results: one JSON object per reported iteration."""


def member_surgeries(cfg: EsperConfig, iteration: int) -> int:
    """Surgeries a member's learner was trained on after ``iteration`` iterations:
    ``iteration × replicas × cohort × rollout``, every learner update's episodes in full.

    Iterations count the learner's updates, those of the members whose state it copied by an
    exploit included. Exact for a synchronous member none of whose organisms diverged (a
    diverged episode ends early); an upper bound for an asynchronous one, whose updates learn
    from the episodes that are ready. The member's learning curve (the exported ``history``)
    has each iteration's measured count."""
    t = cfg.policy.training
    return iteration * t.replicas * t.cohort * t.rollout


def _run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory of a member checkpoint: ``RUN/member.pt`` (``esper run``) or
    ``RUN/tune/<trial>/checkpoint_N/member.pt`` (a sweep); ``None`` elsewhere."""
    folder = checkpoint.resolve().parent
    tune = folder.parent.parent
    for candidate in (folder, *([tune.parent] if tune.name == TUNE_DIR else [])):
        if (candidate / "run.json").is_file():
            return candidate
    return None


def _history(run_dir: Path | None, trial: str, iteration: int) -> list[dict[str, Any]]:
    if run_dir is None:
        return []
    rows = read_learning_curves(run_dir)
    return [r for r in rows if r.get("trial") == trial and int(r["iteration"]) <= iteration]


def member_policy(source: str | os.PathLike[str]) -> dict[str, Any]:
    """The policy-checkpoint payload of the member checkpoint ``source``.

    Args:
        source: A Tune checkpoint directory (its ``member.pt``, or the newest sound earlier one
            of the same trial: :func:`~esper.platform.trainable.load_member_checkpoint`) or a
            member checkpoint file (that file only).

    Returns:
        :func:`~esper.policies.checkpoints.policy_checkpoint`'s layout, with ``surgeries`` from
        :func:`member_surgeries` and a ``provenance`` dict: ``run_dir`` (``None`` when the
        checkpoint lies outside one), ``trial_id``, ``iteration``, ``policy_version``,
        ``fitness`` (the member's at the checkpoint; ``None`` before its first), ``searched``
        (the values of the sweep's searched keys the member ran with), ``checkpoint`` (the
        file read) and ``refused`` (why newer checkpoints of the trial were passed over).

    Raises:
        FileNotFoundError: no member checkpoint at ``source``.
        CheckpointError: not a member checkpoint, or a damaged one (none sound).
    """
    path = Path(source)
    if path.is_dir():
        state, used, refused = load_member_checkpoint(path)
    else:
        state, used, refused = load_checkpoint(path, KIND), path, []
    try:
        cfg = from_plain(state["config"])
        saved = state["learner"]["policy"]
        policy = make_policy(EmrakulPolicy.name, **saved["params"])
        assert isinstance(policy, EmrakulPolicy)
        policy.load_state_dict(saved)  # builds the networks the learner is made around
        learner = CentralLearner(policy, cfg.policy.training, cfg.experiment.seed)
        learner.load_state_dict(state["learner"])
        trial, iteration = str(state["trial_id"]), int(state["iteration"])
        fitness = Fitness(cfg.search.fitness_window)
        fitness.load_state_dict(state["fitness"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{used} is not a complete member checkpoint: missing {err}") from err
    run_dir = _run_dir_of(used)
    result = TrainResult(policy, learner, replica_configs(cfg), _history(run_dir, trial, iteration))
    payload = policy_checkpoint(result)
    payload["surgeries"] = member_surgeries(cfg, iteration)
    payload["provenance"] = {
        "run_dir": None if run_dir is None else str(run_dir),
        "trial_id": trial,
        "iteration": iteration,
        "policy_version": policy.policy_version,
        "fitness": fitness.value if math.isfinite(fitness.value) else None,
        "searched": {k.removeprefix(HP_PREFIX): v for k, v in searched_values(cfg).items()},
        "checkpoint": str(used.resolve()),
        "refused": list(refused),
    }
    return payload


def imitation_policy(cfg: EsperConfig) -> dict[str, Any]:
    """The policy-checkpoint payload of the clone every member of a sweep of ``cfg`` starts
    from (``policy.training.imitation > 0``): its learner's policy, seeded as a member's, after
    :func:`~esper.platform.population.imitation_warm_start`, before any RL update. Layout as
    :func:`member_policy`'s, with ``surgeries`` 0 and a ``provenance`` of ``imitation``.

    Raises:
        ValueError: ``cfg`` has no imitation.
    """
    t = cfg.policy.training
    if not t.imitation:
        raise ValueError("policy.training.imitation=0: a sweep of this config has no warm start")
    policy = learner_policy(cfg)  # as a member's learner
    logged = imitation_warm_start(cfg, policy)
    learner = CentralLearner(policy, t, cfg.experiment.seed)
    result = TrainResult(policy, learner, replica_configs(cfg), [{"surgery": 0, **logged}])
    payload = policy_checkpoint(result)
    payload["surgeries"] = 0
    payload["provenance"] = {"imitation": True, "imitation_surgeries": t.imitation,
                             "policy_version": policy.policy_version, **logged}  # fmt: skip
    return payload


def export_member_policy(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the policy of the member checkpoint ``source`` (:func:`member_policy`) to ``out``
    as a policy checkpoint, atomically; returns the path written."""
    return save_policy(out, member_policy(source))


# -- finding members -----------------------------------------------------------------------


@dataclass(frozen=True)
class _TrialResult:
    """What :func:`~esper.platform.sweep.collect` reads of a Tune result: the trial's folder,
    its last reported result and config, and its error (if it failed)."""

    path: str
    metrics: dict[str, Any] | None
    config: dict[str, Any] | None
    error: str | None


def _last_result(trial_dir: Path) -> _TrialResult:
    results = trial_dir / _RESULTS
    lines = results.read_text(encoding="utf-8").splitlines() if results.is_file() else []
    last = next((line for line in reversed(lines) if line.strip()), None)
    metrics = None if last is None else json.loads(last)
    config = None if metrics is None else metrics.get("config")
    error_file = trial_dir / "error.txt"
    error = error_file.read_text(encoding="utf-8") if error_file.is_file() else None
    return _TrialResult(str(trial_dir), metrics, config, error)


def _trial_id(trial_dir: Path) -> str:
    """Tune's trial id in its folder's name (``MemberTrainable_27d19_00001_1_…``)."""
    return "_".join(trial_dir.name.split("_")[1:3])


def _sweep_config(run_dir: Path) -> EsperConfig:
    meta = run_dir / "run.json"
    if not meta.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no run.json)")
    return from_plain(json.loads(meta.read_text(encoding="utf-8"))["config"])


def sweep_members(run_dir: str | os.PathLike[str]) -> dict[str, Path | None]:
    """Each member of the run ``run_dir`` → its latest checkpoint directory (``None`` for a
    member that left none): the trials of a sweep, or ``esper run``'s member ``t0``.

    Raises:
        ConfigError: ``run_dir`` is not a run directory.
    """
    run = Path(run_dir).expanduser().resolve()
    _sweep_config(run)
    experiment = run / TUNE_DIR
    if not experiment.is_dir():
        return {RUN_MEMBER: run} if (run / CHECKPOINT_FILE).is_file() else {}
    members: dict[str, Path | None] = {}
    for trial_dir in sorted(d for d in experiment.iterdir() if d.is_dir()):
        saved = sorted(d.parent for d in trial_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
        members[_trial_id(trial_dir)] = saved[-1] if saved else None
    return members


def member_checkpoint(run_dir: str | os.PathLike[str], trial: str) -> Path:
    """Member ``trial``'s latest checkpoint directory in the run ``run_dir``.

    Raises:
        ConfigError: ``run_dir`` is not a run directory, or ``trial`` is not one of its members
            (they are listed).
        CheckpointError: the member left no checkpoint.
    """
    members = sweep_members(run_dir)
    if trial not in members:
        raise ConfigError(
            f"trial {trial!r} is not a member of {run_dir}; members: "
            f"{', '.join(members) or '(none)'}"
        )
    checkpoint = members[trial]
    if checkpoint is None:
        raise CheckpointError(
            f"member {trial} of {run_dir} left no checkpoint (a sweep checkpoints its members "
            "every search.perturbation_interval iterations and at their end)"
        )
    return checkpoint


def best_member(
    run_dir: str | os.PathLike[str], metric: str = "fitness", mode: str | None = None
) -> tuple[str, Path]:
    """The member of the run ``run_dir`` whose last reported ``metric`` is best (``mode``
    ``max`` or ``min``; the sweep's ``search.mode`` by default), and its latest checkpoint
    directory (of members that tie, the first in Tune's order, as on the sweep's leaderboard).
    An ``esper run`` directory has one member, ``t0``.

    Raises:
        ConfigError: ``run_dir`` is not a run directory, or no member reported a finite
            ``metric`` (the metrics they did report are listed).
        CheckpointError: no member left a checkpoint, or the best one left none.
    """
    run = Path(run_dir).expanduser().resolve()
    members = sweep_members(run)
    if not any(members.values()):
        raise CheckpointError(
            f"{run} holds no member checkpoint (a sweep's under {TUNE_DIR}/*/checkpoint_*/, "
            f"esper run's as {CHECKPOINT_FILE})"
        )
    if not (run / TUNE_DIR).is_dir():
        return RUN_MEMBER, run
    cfg = _sweep_config(run)
    if mode is not None and mode not in ("max", "min"):
        raise ConfigError(f"mode={mode!r}: use 'max' or 'min'")
    search = dataclasses.replace(cfg.search, metric=metric, mode=mode or cfg.search.mode)
    experiment = run / TUNE_DIR
    results = [_last_result(d) for d in sorted(experiment.iterdir()) if d.is_dir()]
    best = collect(dataclasses.replace(cfg, search=search), run, results).best
    if not best:
        reported = sorted({k for r in results for k, v in (r.metrics or {}).items()
                           if isinstance(v, float)})  # fmt: skip
        raise ConfigError(
            f"no member of {run} reported a finite {metric!r}; reported: "
            f"{', '.join(reported) or '(nothing)'}"
        )
    trial = str(best["trial"])
    return trial, member_checkpoint(run, trial)
