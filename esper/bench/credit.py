"""What variance-reduced credit buys: does a surgery's reward follow the surgery's own effect?

For every surgery of an exploring Emrakul on a training stream, three copies of the organism
train the same next ``K`` SGD steps on the same batches:

* the organism *with* the surgery (what training sees: its raw reward terms);
* the same organism *without* it (its state copied right before the surgery; an empty action):
  the surgery's **effect** is the with-minus-without online accuracy over those steps — the
  quantity the accuracy term of the reward is meant to carry;
* its **control twin** (:mod:`esper.policies.credit`): a copy of the organism made once at the
  stream's first surgery and operated on by RigL ever since, as in training.

The accuracy term in three forms (:class:`esper.policies.credit.Credit`): ``raw`` (the
organism's online accuracy, the reward before the control), ``level`` (minus the twin's) and
``change`` (also minus the organism's gap to its twin in the interval before the surgery).
Reported: the Pearson correlation of each with the effect (pooled over every surgery, with a BCa
bootstrap interval over surgeries, and per stream), Spearman's, and the same for the whole
weighted reward, and of the reward as it was before this control (raw accuracy, the spike term
unbounded: :mod:`esper.workloads.reward`). The no-surgery branch is measurement only: it is what a
counterfactual replay would cost at every surgery of training, and the reason the control is a
twin instead is in :mod:`esper.policies.credit`'s docstring.

Used by ``benchmarks/credit.py`` (the recorded run) and by ``esper bench quality`` (the
measurement its JSON carries, on its training streams and seeds).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from esper.bench.quality_suite import SMALL_STREAMS, Stream

__all__ = ["CreditSetup", "credit_summary", "measure_stream"]

DEFAULT_CHECKPOINT = "benchmarks/results/quality-emrakul.pt"
"""The shipped Emrakul checkpoint (``esper bench quality``'s chosen policy), acting with
exploration as a policy in training does."""


@dataclass(frozen=True)
class CreditSetup:
    """One credit measurement.

    Attributes:
        streams: Streams measured on (training streams: never the evaluation seeds').
        surgeries: Surgeries per stream.
        density: Density budget.
        seed: Base seed (stream ``i`` uses ``seed + 1 + i``, as training organisms do).
        checkpoint: The acting policy.
        control: The control twin's surgeon.
    """

    streams: tuple[Stream, ...] = SMALL_STREAMS
    surgeries: int = 40
    density: float = 0.1
    seed: int = 0
    checkpoint: str = DEFAULT_CHECKPOINT
    control: str = "rigl"


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def measure_stream(
    stream: Stream,
    density: float,
    seed: int,
    checkpoint: str,
    surgeries: int,
    control: str = "rigl",
) -> list[dict[str, Any]]:
    """One row per surgery on ``stream``: the raw terms, the twin's accuracy, the no-surgery
    branch's accuracy (see the module docstring). Stops at a divergence."""
    from esper.conf import compose
    from esper.policies.checkpoints import load_policy
    from esper.policies.emrakul.policy import EmrakulPolicy
    from esper.policies.reference import ReferenceTwins
    from esper.threads import one_thread
    from esper.workloads.factory import build_organism

    cfg = compose(
        [*stream.overrides, "policy=emrakul", f"policy.density={density}",
         f"experiment.seed={seed}"]
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    with one_thread():
        organism = build_organism(cfg, replica_id=0)
        step = organism.reset()
        twin = ReferenceTwins(control, lambda rid: build_organism(cfg, replica_id=rid), [0], seed)
        twin.sync(0, organism)
        shadow = build_organism(cfg, replica_id=0)  # the no-surgery branch
        policy = load_policy(checkpoint, greedy=False)
        assert isinstance(policy, EmrakulPolicy)
        policy.reset(organism, step)
        alpha = organism.reward_weights.alpha
        gap = _mean(step.info["accuracies"]) - _mean(twin.steps[0].info["accuracies"])
        for j in range(surgeries):
            before = copy.deepcopy(organism.state_dict())
            actions = policy.decide(organism, step, explore=True)
            data = policy.data_action()
            step = organism.step(actions, data=data)
            twin_episode = twin.rollout(1)[0]
            shadow.load_state_dict(before)
            without = shadow.step({}, data=data)
            if step.info["diverged"] or twin_episode.diverged or without.info["diverged"]:
                break
            assert step.components is not None
            acc_with = _mean(step.info["accuracies"])
            acc_twin = _mean(twin_episode.accuracies)
            rows.append({
                "stream": stream.name, "surgery": j, "alpha": alpha,
                "accuracy": acc_with,
                "accuracy_without": _mean(without.info["accuracies"]),
                "accuracy_twin": acc_twin,
                "gap_before": gap,
                "reward": float(step.reward),
                "spike": float(step.components.spike),
                "epsilon": organism.reward_weights.epsilon,
                "changed": sum(e.count for e in step.events if e.action in ("prune", "regrow")),
            })  # fmt: skip
            gap = acc_with - acc_twin
    return rows


def _correlation(
    x: np.ndarray, y: np.ndarray, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Pearson ``r`` with a BCa bootstrap interval over the (x, y) pairs."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": None, "ci": [None, None], "n": len(x)}
    r = float(stats.pearsonr(x, y).statistic)
    if abs(r) > 1.0 - 1e-12:  # a perfect line: every resample gives r (BCa is undefined)
        return {"r": r, "ci": [r, r], "n": len(x)}
    with warnings.catch_warnings():  # small samples resample to constant pairs now and then
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        boot = stats.bootstrap(
            (x, y),
            lambda a, b: stats.pearsonr(a, b).statistic,
            paired=True,
            vectorized=False,
            n_resamples=resamples,
            method="BCa",
            rng=np.random.default_rng(seed),
        )
    low, high = boot.confidence_interval
    return {"r": r, "ci": [float(low), float(high)], "n": len(x)}


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (``None`` when either side is constant)."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


def credit_summary(rows: Sequence[dict[str, Any]], resamples: int = 2000) -> dict[str, Any]:
    """Correlations with each surgery's effect of the accuracy term and of the whole reward in
    three forms (``raw``; ``level``: minus the twin's accuracy; ``change``: also minus the gap
    before the surgery, :class:`esper.policies.credit.Credit`): Pearson with BCa intervals,
    Spearman, and the terms' spreads, pooled and per stream (``resamples``: the bootstrap's)."""

    def block(part: Sequence[dict[str, Any]]) -> dict[str, Any]:
        acc = np.array([r["accuracy"] for r in part])
        twin = np.array([r["accuracy_twin"] for r in part])
        effect = acc - np.array([r["accuracy_without"] for r in part])
        alpha = np.array([r["alpha"] for r in part])
        reward = np.array([r["reward"] for r in part])
        gap_before = np.array([r["gap_before"] for r in part])
        forms = {"raw": acc, "level": acc - twin, "change": acc - twin - gap_before}
        rewards = {k: reward - alpha * (acc - v) for k, v in forms.items()}
        # before this issue: raw accuracy and the spike unbounded (s, not s / (1 + s))
        spike = np.array([r["spike"] for r in part])
        epsilon = np.array([r["epsilon"] for r in part])
        unbounded = spike / np.maximum(1.0 - spike, 1e-12)
        before = reward + epsilon * spike - epsilon * unbounded
        return {
            "surgeries": len(part),
            "accuracy_term": {k: _correlation(v, effect, resamples) for k, v in forms.items()},
            "reward": {"before": _correlation(before, effect, resamples)}
            | {k: _correlation(v, effect, resamples) for k, v in rewards.items()},
            "spearman": {k: _spearman(v, effect) for k, v in forms.items()},
            "sd": {
                "effect": float(np.std(effect)),
                **{k: float(np.std(v)) for k, v in forms.items()},
            },
            "mean_effect": float(np.mean(effect)) if len(part) else None,
        }

    streams = sorted({r["stream"] for r in rows})
    return {
        "pooled": block(rows),
        "per_stream": {s: block([r for r in rows if r["stream"] == s]) for s in streams},
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown table of :func:`credit_summary`: Pearson r with the effect, per form."""

    def cell(c: dict[str, Any]) -> str:
        if c["r"] is None:
            return "n/a"
        low, high = c["ci"]
        return f"{c['r']:+.2f} [{low:+.2f}, {high:+.2f}]"

    lines = [
        "| streams | surgeries | accuracy term: raw | level | change | reward: before | raw "
        "| level | change |",
        "|---|---:|---|---|---|---|---|---|---|",
    ]
    parts = [("all (pooled)", summary["pooled"]), *summary["per_stream"].items()]
    for name, b in parts:
        cells = [cell(b["accuracy_term"][form]) for form in ("raw", "level", "change")]
        cells += [cell(b["reward"][form]) for form in ("before", "raw", "level", "change")]
        lines.append(f"| {name} | {b['surgeries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
