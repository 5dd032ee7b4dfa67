"""Training Emrakul for ``esper bench quality`` by a PBT sweep (``trainer="sweep"``).

The platform's trainer (:mod:`esper.platform.sweep`): a population of ``sweep_members``
members (Jaderberg et al. 2017, "Population Based Training of Neural Networks"), each one
central learner with one replica organism per training stream, ranked by the sweep's fitness
(online accuracy relative to a RigL twin on the same batches, :mod:`esper.platform.fitness`)
while PBT explores :data:`SEARCH_BOUNDS` (the reward weights, Emrakul's heat temperature) and the
Specialists' learning rate around the preset's. The sweep runs in the benchmark's Ray (local, or
the cluster of ``--address``): its run directory is ``<out_dir>/run<r>/<run name>``.

Its checkpoint candidates (:func:`export_candidates`) are the best member's checkpoints that
Tune kept, at least ``snapshot_every`` of its learner's surgeries apart (its learning curve; an
exploit can leave it short: Tune does not keep the state an exploit replaced), every other
member's latest and, with imitation, the warm start every member began from (surgeries 0),
exported as policy checkpoints (:mod:`esper.platform.export`); choosing among
them on the validation seeds is :mod:`esper.bench.quality_selection`'s job. The sweep is driven
through :mod:`esper.platform` (run directory, :func:`~esper.platform.sweep.run_sweep`) as
``esper sweep`` drives it: the benchmarks may not import :mod:`esper.commands` (import layers).

What differs from the in-process trainer (:mod:`esper.bench.quality_training`):

* The replicas cycle over workload *presets* (``policy.training.workloads``; the platform
  builds each replica's workload from its preset and keeps only the member's Scalpel), so they
  train on the streams' families at their presets' default lengths and hosts: a stream's own
  changes (``workload.num_tasks``, ``task_length``, the regression stream's 100-unit host) are
  not applied, and a stream override outside ``workload`` is refused.
* The RigL-imitation warm start (``preset.imitation`` surgeries per organism) is the
  platform's own (:func:`~esper.platform.population.imitation_warm_start`): on twins of the
  replicas' organisms, every member from the same clone. Its snapshot, surgeries 0, is
  rebuilt here from the sweep's config (:func:`~esper.platform.export.imitation_policy`) and
  kept apart as the ``imitation_only`` candidate, as the in-process trainer's is.
* The default mask mechanism (``masked``) has no temperature, so no mask temperature
  (``workload.scalpel.mechanism.params.tau``/``beta``) applies; the temperature searched is
  Emrakul's own heat factor on the Specialists' Gumbel ``τ`` (``policy.params.heat_tau``).
* Organisms are seeded :func:`~esper.workloads.factory.replica_seed` of the training seed and
  their replica id (every member sees the same streams); :func:`sweep_organism_seeds` checks
  they stay training seeds. An organism rebuilt after divergence takes a replica id drawn from
  2²⁰ (:mod:`esper.platform.replica`): its seed meets a held-out one with odds ≈ 10⁻⁸.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from esper.bench.quality_evaluation import compose_config
from esper.bench.quality_suite import QualityPreset, Stream
from esper.bench.quality_training import TrainedVariant

if TYPE_CHECKING:
    from esper.config import EsperConfig

__all__ = [
    "LR_SPAN",
    "SEARCH_BOUNDS",
    "check_member_fits",
    "export_candidates",
    "is_swept",
    "sweep_config",
    "sweep_organism_seeds",
    "sweep_overrides",
    "train_by_sweep",
]

SEARCH_BOUNDS: dict[str, tuple[float, float]] = {
    "reward.beta": (0.0, 0.5),
    "reward.gamma": (0.0, 0.5),
    "reward.delta": (0.0, 0.2),
    "reward.epsilon": (0.0, 0.5),
    "policy.params.heat_tau": (2.0, 20.0),
}
"""What PBT explores besides the learning rate: the reward weights of ``search=pbt`` (``α``
stays 1, the scale) and the heat burst's factor on ``τ`` (default 10)."""

LR_SPAN = 3.0
"""The learning rate's bound: the preset's ``learner_params["lr"]`` divided and multiplied by
this, so the in-process trainer's rate lies in the middle of what the sweep explores."""


def is_swept(preset: QualityPreset, variant: str) -> bool:
    """Whether ``variant`` trains by sweep: the full policy under ``trainer="sweep"`` (the
    trained ablations always train in process)."""
    return preset.trainer == "sweep" and variant == "emrakul"


def _workload(stream: Stream) -> str:
    """The workload preset of ``stream`` (its ``workload=NAME``); refuses an override the
    sweep's replicas cannot take."""
    names = [o.split("=", 1)[1] for o in stream.overrides if o.startswith("workload=")]
    other = [o for o in stream.overrides if not o.startswith("workload")]
    if len(names) != 1 or other:
        raise ValueError(
            f"stream {stream.name!r}: a sweep's replica takes one workload preset "
            f"(workload=NAME) and nothing outside it, got {list(stream.overrides)}; put other "
            "settings in the preset's sweep_overrides or use trainer='in_process'"
        )
    return names[0]


def sweep_overrides(preset: QualityPreset, run: int, out_dir: Path) -> list[str]:
    """The config overrides of training run ``run``'s sweep (see the module docstring):
    ``iterations`` is the fewest whose surgeries over every member reach
    ``preset.train_surgeries``; ``preset.sweep_overrides`` come last."""
    workloads = [_workload(s) for s in preset.streams]
    replicas = len(workloads)
    per_iteration = preset.sweep_members * replicas * preset.rollout
    lr = float(preset.learner_params["lr"])
    bounds = {**SEARCH_BOUNDS, "policy.training.learner_params.lr": (lr / LR_SPAN, lr * LR_SPAN)}
    fixed = [f"policy.training.learner_params.{k}={v}"
             for k, v in preset.learner_params.items() if k != "lr"]  # fmt: skip
    searched = ",".join(f"{k}:[{lo:g},{hi:g}]" for k, (lo, hi) in bounds.items())
    reference = [f"search.reference={preset.control}"] if preset.control != "none" else []
    return [
        "policy=emrakul",
        "search=pbt",
        "experiment.name=quality",
        f"experiment.seed={preset.train_seeds[run]}",
        f"policy.density={preset.densities[0]}",
        f"search.num_samples={preset.sweep_members}",
        f"policy.training.replicas={replicas}",
        f"policy.training.workloads=[{','.join(workloads)}]",
        f"policy.training.rollout={preset.rollout}",
        f"policy.training.imitation={preset.imitation}",
        f"policy.training.iterations={math.ceil(preset.train_surgeries / per_iteration)}",
        f"policy.training.control={preset.control}",
        f"policy.training.credit={preset.credit}",
        *reference,
        f"search.bounds={{{searched}}}",
        *fixed,
        f"cluster.storage_path={out_dir / f'run{run}'}",
        *preset.sweep_overrides,
    ]


def sweep_config(preset: QualityPreset, run: int, out_dir: Path) -> EsperConfig:
    """The composed config of run ``run``'s sweep (:func:`sweep_overrides`), its organisms'
    seeds checked (:func:`sweep_organism_seeds`).

    Raises:
        esper.conf.ConfigError: a setting the config refuses.
        ValueError: a stream the sweep cannot take, or seeds that meet held-out ones.
    """
    cfg: EsperConfig = compose_config(sweep_overrides(preset, run, out_dir))
    sweep_organism_seeds(preset, run, cfg)
    return cfg


def sweep_organism_seeds(preset: QualityPreset, run: int, cfg: EsperConfig) -> tuple[int, ...]:
    """The seeds of run ``run``'s sweep organisms (``cfg`` its composed config): one per
    replica id (``replicas × cohort``), the same in every member.

    Raises:
        ValueError: one is a validation or evaluation seed, or another training run's.
    """
    from esper.workloads.factory import replica_seed

    t = cfg.policy.training
    seeds = tuple(replica_seed(cfg.experiment.seed, i) for i in range(t.replicas * t.cohort))
    others = {s for q, seed in enumerate(preset.train_seeds) if q != run
              for s in (seed, *preset.organism_seeds(q))}  # fmt: skip
    held = {
        **dict.fromkeys(preset.validation_seeds, "validation"),
        **dict.fromkeys(preset.seeds, "evaluation"),
        **dict.fromkeys(others, "training"),
    }
    if clash := [(s, held[s]) for s in seeds if s in held]:
        raise ValueError(
            f"preset {preset.name!r}: run {run}'s sweep organisms use {clash[0][1]} seed "
            f"{clash[0][0]}; move train_seeds[{run}]"
        )
    return seeds


def check_member_fits(cfg: EsperConfig) -> None:
    """Refuse a sweep none of whose members fits in the running Ray's CPUs (Tune would wait
    for them forever).

    Raises:
        ValueError: naming what a member needs, what Ray has and the fixes.
    """
    import ray

    c, t = cfg.cluster, cfg.policy.training
    need = c.learner_cpus + t.replicas * c.replica_cpus
    have = float(ray.cluster_resources().get("CPU", 0.0))
    if need > have:
        raise ValueError(
            f"a sweep member needs {need:g} CPUs (learner {c.learner_cpus:g} + {t.replicas} "
            f"replicas × {c.replica_cpus:g}) and Ray has {have:g}: raise --num-cpus (logical "
            "CPUs may exceed the cores), join a cluster (--address), or add "
            "cluster.replica_cpus=… / cluster.learner_cpus=… to the preset's sweep_overrides"
        )


def train_by_sweep(
    preset: QualityPreset, run: int, out_dir: Path, console: Console
) -> TrainedVariant:
    """Train run ``run``'s full policy by a PBT sweep in the running Ray and export its
    checkpoint candidates to ``<out_dir>/run<run>/emrakul/`` (see the module docstring).

    Raises:
        ValueError: a member that cannot fit, or seeds that meet held-out ones.
        esper.errors.RunError: members failed (their errors are named), or none has a fitness.
    """
    from esper.config import to_plain
    from esper.errors import RunError
    from esper.platform.runs import create_run, new_run_dir, run_state
    from esper.platform.sweep import run_sweep

    cfg = sweep_config(preset, run, out_dir)
    check_member_fits(cfg)
    run_dir = new_run_dir(cfg, "sweep", preset.name)
    create_run(run_dir, cfg, "sweep", preset.name, "emrakul", quality_run=run)
    t = cfg.policy.training
    console.print(f"run {run}: sweep {run_dir} ({preset.sweep_members} members × {t.replicas} "
                  f"replicas × {t.iterations} iterations of {t.rollout} surgeries)")  # fmt: skip
    with run_state(run_dir) as outcome:
        result = run_sweep(cfg, run_dir, console, resume=False)
        if result.failed:
            outcome.fail("; ".join(f"{trial}: {error}" for trial, error in result.failed))
    if outcome.error is not None or not result.best:
        why = outcome.error or f"no member reported a finite {cfg.search.metric}"
        raise RunError(f"run {run}'s sweep {run_dir}: {why}")
    best = str(result.best["trial"])
    folder = out_dir / f"run{run}" / "emrakul"
    snapshots, sources = export_candidates(run_dir, best, folder, preset.snapshot_every)
    if t.imitation:  # the warm start every member began from: the imitation_only candidate
        from esper.platform.export import imitation_policy
        from esper.policies.checkpoints import save_policy

        path = str(save_policy(folder / "imitation.pt", imitation_policy(cfg)))
        snapshots = ((0, path), *snapshots)
        sources[path] = {"imitation": True, "trial_id": None}
    members = [{"trial": m["trial"], "fitness": m.get(cfg.search.metric),
                "searched": {k: m[k] for k in cfg.search.bounds if k in m}}
               for m in result.members]  # fmt: skip
    hyperparameters = {
        "trainer": "sweep",
        "run_dir": str(run_dir),
        "best_member": best,
        "members": members,
        "fitness": cfg.search.metric,
        "bounds": to_plain(cfg.search.bounds),
        "overrides": sweep_overrides(preset, run, out_dir),
        "organism_seeds": list(sweep_organism_seeds(preset, run, cfg)),
        "learner": t.learner,
        "learner_params": dict(preset.learner_params),
        "control": t.control,
        "credit": t.credit,
        "rollout": t.rollout,
        "replicas": t.replicas,
        "workloads": list(t.workloads),
        "iterations": t.iterations,
        "imitation": t.imitation,
        "surgeries": preset.train_surgeries,
    }
    done = preset.sweep_members * t.replicas * t.cohort * t.rollout * t.iterations
    return TrainedVariant(run, preset.train_seeds[run], "emrakul", str(folder), snapshots, done,
                          hyperparameters, sources)  # fmt: skip


def export_candidates(
    run_dir: Path, best: str, folder: Path, every: int
) -> tuple[tuple[tuple[int, str], ...], dict[str, dict[str, Any]]]:
    """Export the checkpoint candidates of the sweep ``run_dir`` to ``folder``: member
    ``best``'s kept checkpoints at least ``every`` of its learner's surgeries apart (and its
    latest), then every other member's latest.

    Returns:
        ``(surgeries, path)`` of each candidate (surgeries:
        :func:`~esper.platform.export.member_surgeries`), and per path where it came from:
        ``trial_id``, ``iteration``, ``fitness``, ``searched`` (the member's values then) and
        the member ``checkpoint`` exported.
    """
    from esper.platform.export import member_checkpoint, member_policy, sweep_members
    from esper.platform.trainable import CHECKPOINT_FILE
    from esper.policies.checkpoints import save_policy

    trial_dir = member_checkpoint(run_dir, best).parent
    kept = sorted(p.parent for p in trial_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    others = [c for trial, c in sweep_members(run_dir).items() if trial != best and c]
    folder.mkdir(parents=True, exist_ok=True)
    snapshots: list[tuple[int, str]] = []
    sources: dict[str, dict[str, Any]] = {}
    last = -math.inf
    for i, source in enumerate([*kept, *others]):
        payload = member_policy(source)
        p, surgeries = payload["provenance"], int(payload["surgeries"])
        own_curve = i < len(kept)
        if own_curve and i < len(kept) - 1 and surgeries - last < every:
            continue  # thinned: too close to the previous candidate
        last = surgeries if own_curve else last
        path = folder / f"{p['trial_id']}-{p['iteration']:05d}.pt"
        if str(path) in sources:
            continue  # a damaged checkpoint fell back on one exported already
        save_policy(path, payload)
        snapshots.append((surgeries, str(path)))
        sources[str(path)] = {"trial_id": p["trial_id"], "iteration": p["iteration"],
                              "fitness": p["fitness"], "searched": p["searched"],
                              "checkpoint": p["checkpoint"]}  # fmt: skip
    return tuple(snapshots), sources
