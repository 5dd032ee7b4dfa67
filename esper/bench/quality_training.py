"""Training the Emrakul variants of ``esper bench quality``, with their checkpoint candidates.

Each variant (the full policy or a trained ablation of
:data:`~esper.bench.quality_suite.TRAINED_ABLATIONS`) of each training run trains with
:func:`~esper.policies.training.train_policy` on one organism per (stream, density), seeded
from the run's training seed, and saves a checkpoint candidate after the RigL-imitation warm
start and every ``snapshot_every`` surgeries. :class:`TrainedVariant` records where the
candidates are and what the variant trained with; choosing among them is
:mod:`esper.bench.quality_selection`'s job. A preset with ``trainer="sweep"`` trains each run's
full policy by a PBT sweep instead (:mod:`esper.bench.quality_sweep`, which returns a
:class:`TrainedVariant` too). With ``--checkpoint`` nothing trains: :func:`check_given_checkpoint`
refuses a preset that needs training of its own and :func:`given_checkpoint` records the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esper.bench.quality_evaluation import compose_config, policy_overrides
from esper.bench.quality_suite import TRAINED_ABLATIONS, QualityPreset

if TYPE_CHECKING:
    from esper.config import EsperConfig
    from esper.policies.training import TrainResult

__all__ = [
    "TrainedVariant",
    "check_given_checkpoint",
    "given_checkpoint",
    "train_variant",
    "training_overrides",
]


@dataclass(frozen=True)
class TrainedVariant:
    """One Emrakul variant of one training run: what :func:`train_variant` returns.

    Attributes:
        run: Index of the training run (of ``preset.train_seeds``).
        seed: Its training seed.
        variant: ``emrakul`` or a trained ablation.
        directory: Where its checkpoint candidates are.
        snapshots: ``(surgeries, path)`` of every checkpoint candidate, in training order
            (surgeries 0: the imitation warm start, before any RL update).
        surgeries: Surgeries trained (RL, over all organisms).
        hyperparameters: What it trained with (``trainer``: ``in_process`` here, ``sweep``
            for :func:`~esper.bench.quality_sweep.train_by_sweep`, whose keys it documents):
            learner and its parameters, the General's parameters, reward weights,
            ``control``, ``imitation``, ``rollout``, the budget and the policy's parameters.
        sources: Per candidate path, where it came from, when a sweep trained it (its
            member's ``trial_id``, ``iteration``, ``fitness`` and ``searched`` values); empty
            for the in-process trainer, whose candidates are its own snapshots.
    """

    run: int
    seed: int
    variant: str
    directory: str
    snapshots: tuple[tuple[int, str], ...]
    surgeries: int
    hyperparameters: dict[str, Any]
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)


def training_overrides(preset: QualityPreset, variant: str, run: int) -> list[str]:
    """The config overrides of one training: the preset's settings, then the variant's."""
    return [
        f"experiment.seed={preset.train_seeds[run]}",
        "policy=emrakul",
        f"policy.training.surgeries={preset.train_surgeries}",
        f"policy.training.rollout={preset.rollout}",
        f"policy.training.imitation={preset.imitation}",
        f"policy.training.control={preset.control}",
        f"policy.training.credit={preset.credit}",
        *TRAINED_ABLATIONS.get(variant, ()),
        *preset.train_overrides,
    ]


def train_variant(
    preset: QualityPreset, variant: str, out_dir: str, run: int = 0
) -> TrainedVariant:
    """Train one Emrakul variant in training run ``run`` on its organisms (seeded
    ``preset.organism_seeds(run)``), saving checkpoint candidates to
    ``<out_dir>/run<run>/<variant>/``."""
    from esper.policies.checkpoints import save_policy
    from esper.policies.training import train_policy

    cfg = compose_config(training_overrides(preset, variant, run))
    training = dataclasses.replace(cfg.policy.training,
                                   learner_params=dict(preset.learner_params))  # fmt: skip
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, training=training))
    units = zip(product(preset.streams, preset.densities), preset.organism_seeds(run), strict=True)
    organisms = [
        compose_config(
            [*policy_overrides(s, "emrakul", d), f"experiment.seed={seed}", *preset.train_overrides]
        )
        for (s, d), seed in units
    ]
    folder = Path(out_dir) / f"run{run}" / variant
    folder.mkdir(parents=True, exist_ok=True)
    saved: list[tuple[int, str]] = []

    def snapshot(result: TrainResult) -> None:
        done = int(result.history[-1]["surgery"])
        last = saved[-1][0] if saved else -1
        final = done >= preset.train_surgeries
        if done == 0 or final or done - max(last, 0) >= preset.snapshot_every:
            path = folder / f"surgery-{done:06d}.pt"
            save_policy(path, result)
            saved.append((done, str(path)))

    result = train_policy(cfg, organisms, on_episode=snapshot)
    return TrainedVariant(
        run, preset.train_seeds[run], variant, str(folder), tuple(saved),
        int(result.history[-1]["surgery"]), _hyperparameters(cfg, result),
    )  # fmt: skip


def _hyperparameters(cfg: EsperConfig, result: TrainResult) -> dict[str, Any]:
    from esper.config import to_plain

    training = cfg.policy.training
    return {
        "trainer": "in_process",
        "learner": training.learner,
        "learner_params": to_plain(dict(result.learner.specialists.params)),
        "general_params": to_plain(dict(training.general_params)),
        "reward": to_plain(cfg.reward),
        "control": training.control,
        "imitation": training.imitation,
        "rollout": training.rollout,
        "surgeries": training.surgeries,
        "policy_params": to_plain(dict(result.policy.params)),
    }


def check_given_checkpoint(preset: QualityPreset, checkpoint: Path) -> None:
    """Refuse to evaluate a given Emrakul ``checkpoint`` instead of training, where ``preset``
    needs more than one policy (ablations or several training runs) or the file is missing.

    Raises:
        ValueError: naming ``--checkpoint`` and what the preset would train.
    """
    trains = [f"ablations {list(preset.ablations)}"] if preset.ablations else []
    if len(preset.train_seeds) > 1:
        trains.append(f"{len(preset.train_seeds)} training runs")
    if trains:
        raise ValueError(
            f"--checkpoint evaluates one given policy, but preset {preset.name!r} has "
            f"{' and '.join(trains)}, which it trains; drop --checkpoint or use a preset "
            "without them (anchors)"
        )
    if not checkpoint.is_file():
        raise ValueError(f"--checkpoint {checkpoint} is not a file")


def given_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """The report's ``training`` section when nothing trained: the checkpoint evaluated as
    ``emrakul``, as given, and its SHA-256."""
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    return {"trained": False, "checkpoint": str(checkpoint), "sha256": digest}
