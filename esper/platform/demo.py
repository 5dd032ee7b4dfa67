"""``esper demo``: the README's main job, a small PBT sweep of Emrakul sized for a laptop, and
what a newcomer can judge it by: the best member's policy against RigL on a held-out seed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from esper.checkpoint import load_checkpoint
from esper.conf import from_plain
from esper.config import EsperConfig, to_plain
from esper.platform.population import replica_configs
from esper.platform.sweep import TUNE_DIR
from esper.platform.trainable import CHECKPOINT_FILE, KIND
from esper.policies.base import Policy, make_policy
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.policies.evaluation import evaluate_policy
from esper.threads import one_thread
from esper.workloads.factory import build_organism

__all__ = ["DEMO_OVERRIDES", "HELD_OUT_SEED_OFFSET", "HeldOutComparison", "held_out_comparison"]

DEMO_OVERRIDES: tuple[str, ...] = (
    "policy=emrakul",
    "search=pbt",
    "cluster=laptop",
    "experiment.name=demo",
    "search.num_samples=4",
    "search.perturbation_interval=2",
    "policy.density=0.1",
    "policy.surgery_interval=25",
    "policy.training.replicas=2",
    "policy.training.iterations=8",
    "policy.training.rollout=3",
    "policy.training.workloads=[digits_permuted,digits_rotated]",
    "workload.scalpel.mechanism.name=hard_concrete",
    "search.bounds.workload.scalpel.mechanism.params.beta=[0.3,1.5]",
)
"""4 members × 2 replicas (permuted and rotated digits) at 10% density, Hard Concrete gates
(Louizos et al. 2018), PBT over the reward weights and the gates' temperature β with an
exploit-and-explore step every 2 of 8 iterations. (Gumbel-softmax's τ shapes only the gates'
gradients, not its hard forward pass: at these sizes RigL's online accuracy moved by 0.0004
between τ = 0.3 and 3; Hard Concrete's β sets how far its training gates spread: 0.487 at
β = 0.3, 0.419 at 1.5, 12 surgeries of RigL on permuted digits:
``benchmarks/mask_temperature_effect.py``.)"""


HELD_OUT_SEED_OFFSET = 1000
"""The demo's evaluation runs on ``experiment.seed + 1000``: a stream, initial weights and
masks that no member trained on (members train on ``experiment.seed``)."""


@dataclass(frozen=True)
class HeldOutComparison:
    """The best member's policy and RigL on one held-out stream and seed."""

    trial: str
    seed: int
    surgeries: int
    emrakul: float
    """Online accuracy of the best member's policy (greedy)."""
    rigl: float
    """Online accuracy of RigL on the same stream, seed and steps."""

    @property
    def delta(self) -> float:
        """Emrakul − RigL."""
        return self.emrakul - self.rigl

    def line(self) -> str:
        """``Emrakul (best member) 0.xx · RigL 0.xx · Δ +0.0x`` with where it was measured."""
        return (
            f"Emrakul (best member {self.trial}) {self.emrakul:.3f} · RigL {self.rigl:.3f} · "
            f"Δ {self.delta:+.3f}  (held-out seed {self.seed}, {self.surgeries} surgeries, "
            "online accuracy; one seed: an illustration, not a result)"
        )


def _latest_checkpoint(run_dir: Path, trial: str) -> Path:
    experiment = run_dir / TUNE_DIR
    dirs = [d for d in experiment.iterdir() if d.is_dir() and f"_{trial}_" in f"{d.name}_"]
    files = sorted(f for d in dirs for f in d.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    if not files:
        raise FileNotFoundError(f"no checkpoint of member {trial} under {experiment}")
    return files[-1]


def _online_accuracy(cfg: EsperConfig, policy: Policy, surgeries: int) -> float:
    with one_thread():
        report = evaluate_policy(build_organism(cfg), policy, surgeries)
    return report.online_accuracy


def held_out_comparison(
    cfg: EsperConfig, run_dir: Path, trial: str, surgeries: int | None = None
) -> HeldOutComparison:
    """Evaluate member ``trial``'s latest policy (greedy) and RigL on the member's first
    workload with seed ``experiment.seed + HELD_OUT_SEED_OFFSET``, for ``surgeries``
    surgeries (the whole stream by default).

    Raises:
        FileNotFoundError: the member left no checkpoint.
    """
    state = load_checkpoint(_latest_checkpoint(run_dir, trial), KIND)
    saved = state["learner"]["policy"]
    policy = make_policy("emrakul", **saved["params"])
    assert isinstance(policy, EmrakulPolicy)
    policy.load_state_dict(saved)
    policy.greedy = True
    seed = cfg.experiment.seed + HELD_OUT_SEED_OFFSET
    member = replica_configs(cfg)[0]
    member = dataclasses.replace(
        member, experiment=dataclasses.replace(member.experiment, seed=seed)
    )
    steps = member.experiment.steps or len(build_organism(member).stream)
    n = surgeries or max(1, steps // member.policy.surgery_interval - 1)
    rigl_cfg = from_plain(to_plain(member), {"policy.name": "rigl", "policy.params": {}})
    rigl = make_policy("rigl", **rigl_cfg.policy.params)
    return HeldOutComparison(
        trial, seed, n, _online_accuracy(member, policy, n), _online_accuracy(rigl_cfg, rigl, n)
    )
