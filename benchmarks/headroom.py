"""Is there +0.02 over the imitation to be had? The headroom of Emrakul's action space, measured.

Issue 24 asks reinforcement learning to beat its own imitation warm start by ≥ 0.02 online
accuracy on the suite. The trained General moved the first layer from ERK's 0.103 density to
about 0.12–0.13 (and the second from 0.069 to 0.057), and validation scores stay within noise
of the imitation's across every snapshot. Before asking RL for more, this script measures what
simple policies inside the action space score, on the validation seeds only (never the
evaluation seeds):

* the imitation (RigL-cloned Specialists, no General: ERK stays) at ERK and at allocations that
  scale the first layer's ERK density by ``m`` (the others rescaled to keep the budget): the
  direction the General learned, taken further;
* RigL at ERK with drop fractions α ∈ {0.1, 0.3, 0.5}, with its mask frozen at 75% of the stream
  and without a freeze (``rigl_continual``): how far the Specialists' turnover moves the score;
* a trained Emrakul checkpoint;
* the imitation with a scripted, state-dependent heat rule (:class:`DriftHeated`): a heat burst
  on every layer whenever the interval's online loss jumps above its moving average, the drift
  detector of ``rigl_elastic`` (issue 25's scripted baseline). Does acting on what the organism
  senses pay here, where a constant policy does not?

Each condition runs on the suite's six streams × validation seeds 500 and 501 × densities 0.10
and 0.05 (24 paired units); ``--host cnn`` (or ``wide_mlp``, the held-out hosts of
:mod:`esper.bench.held_out`) puts every stream on another host network, leaving out the streams
whose inputs it refuses; the JSON gives every condition's mean and its paired difference
from the imitation at ERK with a BCa interval. The best condition's difference is an optimistic
estimate of the headroom (it is chosen on the same seeds).

Usage: ``.venv/bin/python benchmarks/headroom.py IMITATION.pt TRAINED.pt OUT.json``
(about 10 minutes on 2 cores; ``--workers N``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from esper.analysis.intervals import paired_interval
from esper.bench.harness import machine_info, pooled
from esper.bench.held_out import HOSTS, on_host, suite_seeds
from esper.bench.held_out import PRESETS as HELD_OUT
from esper.bench.quality_condition import CONTINUAL_HORIZON, RIGL_HORIZON
from esper.bench.quality_evaluation import compose_config, evaluate_run, policy_overrides
from esper.bench.quality_presets import PRESETS
from esper.bench.quality_suite import SMALL_STREAMS, Stream
from esper.policies.drift import LossDrift
from esper.policies.emrakul.actions import SpecialistAction
from esper.policies.emrakul.policy import EmrakulPolicy
from esper.workloads.factory import build_organism
from esper.workloads.organism import Organism, OrganismStep
from esper.workloads.scalpel.allocation import DISTRIBUTIONS, Shapes, erk_densities

SEEDS = (500, 501)
DENSITIES = (0.1, 0.05)
FIRST_SCALES = (0.75, 1.25, 1.5, 2.0)
ALPHAS = (0.1, 0.3, 0.5)


def first_scaled(m: float) -> Callable[[Shapes, float, frozenset[str]], dict[str, float]]:
    """ERK with the first prunable tensor's density × ``m`` (capped at 1) and the others scaled
    by one factor so that the global density stays the budget."""

    def densities(shapes: Shapes, density: float, dense: frozenset[str]) -> dict[str, float]:
        base = erk_densities(shapes, density, dense)
        names = list(shapes)
        sizes = {n: math.prod(shapes[n]) for n in names}
        first = min(1.0, base[names[0]] * m)
        left = density * sum(sizes.values()) - first * sizes[names[0]]
        rest = sum(base[n] * sizes[n] for n in names[1:])
        scale = left / rest
        return {names[0]: first, **{n: min(1.0, base[n] * scale) for n in names[1:]}}

    return densities


HEAT_RULES = {"drift_heat": (3, 10.0, 2.0), "drift_boost": (3, 1.0, 3.0),
              "drift_heat_long": (8, 10.0, 2.0)}  # fmt: skip
"""Scripted heat rules, as Emrakul's ``heat`` (surgeries a burst lasts, factor on ``τ``, factor on
turnover)."""


class DriftHeated(EmrakulPolicy):
    """A loaded Emrakul whose heat bit is set, on every layer, at each loss-detected drift.

    The detector is ``rigl_elastic``'s (:class:`~esper.policies.drift.LossDrift` at its
    defaults: a drift when the interval's online loss exceeds ``1.3 ×`` its moving average). An
    evaluation switches a freshly loaded policy to this class (``__class__``) and gives it a
    detector, so the loaded weights act as trained and only the heat bit is scripted.
    """

    detector: LossDrift
    drift = False

    def decide(
        self, organism: Organism, step: OrganismStep, explore: bool = True
    ) -> dict[str, Any]:
        self.drift = self.detector.update(float(step.info.get("online_loss", math.nan)))
        return super().decide(organism, step, explore)

    def _heated(self, name: str, action: SpecialistAction) -> SpecialistAction:
        if self.drift:
            action = replace(action, heat=True)
        return super()._heated(name, action)


def register_allocations() -> None:
    """Register the ``erk_first_x{m}`` allocations (in this process and the workers it forks)."""
    for m in FIRST_SCALES:
        if f"erk_first_x{m}" not in DISTRIBUTIONS:
            DISTRIBUTIONS.register(f"erk_first_x{m}")(first_scaled(m))


def conditions(imitation: str, trained: str) -> dict[str, dict[str, Any]]:
    """Every condition's :func:`evaluate_run` arguments (stream, density and seed aside)."""
    no_general = (("use_general", False),)
    out: dict[str, dict[str, Any]] = {
        "imitation_erk": {"policy": "emrakul", "checkpoint": imitation, "switches": no_general},
    }
    for m in FIRST_SCALES:
        out[f"imitation_first_x{m}"] = {
            "policy": "emrakul", "checkpoint": imitation, "switches": no_general,
            "allocation": f"erk_first_x{m}",
        }  # fmt: skip
    out["trained_emrakul"] = {"policy": "emrakul", "checkpoint": trained}
    for label, rule in HEAT_RULES.items():
        heat = (*no_general, ("__class__", DriftHeated), ("detector", LossDrift()), ("heat", rule))
        out[f"imitation_{label}"] = {"policy": "emrakul", "checkpoint": imitation, "switches": heat}
    for alpha in ALPHAS:
        for label, horizon in (("rigl", RIGL_HORIZON), ("rigl_continual", CONTINUAL_HORIZON)):
            out[f"{label}_alpha{alpha}"] = {
                "policy": "rigl", "horizon": horizon, "allocation": "erk",
                "overrides": (f"policy.params.alpha={alpha}",),
            }  # fmt: skip
    return out


def headroom_seeds(text: str) -> tuple[int, ...]:
    """The seeds of ``--seeds``: refused when one is a seed that any quality preset trains,
    builds training organisms or evaluates on, or a held-out evaluation seed (the headroom is
    measured where nothing is reported). A quality preset's validation seeds are allowed.

    Raises:
        SystemExit: naming the refused seeds.
    """
    try:
        seeds = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"--seeds={text!r}: expected comma-separated integers") from None
    validation = {v for p in PRESETS.values() for v in p.validation_seeds}
    taken = (suite_seeds() - validation) | {v for p in HELD_OUT.values() for v in p.seeds}
    if not seeds or (bad := sorted(set(seeds) & taken)):
        raise SystemExit(f"--seeds={text!r}: none given, or {bad if seeds else []} are "
                         "training, organism or evaluation seeds")  # fmt: skip
    return seeds


def streams_on(host: str) -> tuple[list[Stream], dict[str, str]]:
    """The suite's streams on ``host`` (:data:`esper.bench.held_out.HOSTS`), and, by name, why
    the host refuses the others (the CNN takes no flat regression inputs); each refusal is
    printed."""
    kept, refused = [], {}
    for stream in SMALL_STREAMS:
        on = on_host(stream, HOSTS[host])
        try:
            build_organism(compose_config(policy_overrides(on, "static", DENSITIES[0])))
        except ValueError as error:
            refused[stream.name] = str(error)
            print(f"left out {stream.name}: {error}", flush=True)
            continue
        kept.append(on)
    return kept, refused


def _run(job: tuple[str, Stream, float, int, dict[str, Any]]) -> tuple[str, str, float, int, float]:
    label, stream, density, seed, kwargs = job
    result = evaluate_run(stream, density=density, seed=seed, **kwargs)
    return label, stream.name, density, seed, float(result["metrics"]["online_accuracy"])


def _runs(scores: dict[str, dict[tuple[str, float, int], float]]) -> list[dict[str, Any]]:
    return [
        {"condition": label, "stream": name, "density": d, "seed": s, "online_accuracy": acc}
        for label, by_unit in scores.items()
        for (name, d, s), acc in sorted(by_unit.items())
    ]  # fmt: skip


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("imitation", help="the imitation checkpoint (a training's surgery 0)")
    parser.add_argument("trained", help="a trained Emrakul checkpoint")
    parser.add_argument("out", type=Path, help="where the JSON goes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="comma-separated seeds (default: the validation seeds 500,501); "
                        "never an evaluation, training or organism seed")  # fmt: skip
    parser.add_argument("--densities", default=",".join(map(str, DENSITIES)),
                        help="comma-separated density budgets (default: 0.1,0.05)")  # fmt: skip
    parser.add_argument("--host", choices=sorted(HOSTS), default="mlp",
                        help="the host network (default: the training host, mlp)")  # fmt: skip
    parser.add_argument("--only", default="", help="comma-separated conditions to run (and "
                        "imitation_erk, the reference); default: all")  # fmt: skip
    args = parser.parse_args()
    seeds = headroom_seeds(args.seeds)
    try:
        densities = tuple(float(v) for v in args.densities.split(","))
    except ValueError:
        raise SystemExit(
            f"--densities={args.densities!r}: expected comma-separated numbers"
        ) from None
    if not all(0.0 < d <= 1.0 for d in densities):
        raise SystemExit(f"--densities={args.densities!r}: each must lie in (0, 1]")
    register_allocations()
    table = conditions(args.imitation, args.trained)
    if args.only:
        keep = {"imitation_erk", *args.only.split(",")}
        if unknown := keep - set(table):
            raise SystemExit(f"unknown conditions {sorted(unknown)}; valid: {', '.join(table)}")
        table = {k: v for k, v in table.items() if k in keep}
    streams, refused = streams_on(args.host)
    jobs = [
        (label, stream, d, s, kwargs)
        for label, kwargs in table.items()
        for stream in streams
        for d in densities
        for s in seeds
    ]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    started = time.perf_counter()
    scores: dict[str, dict[tuple[str, float, int], float]] = {label: {} for label in table}
    for label, name, d, s, acc in pooled(_run, jobs, args.workers, every=24):
        scores[label][(name, d, s)] = acc
    units = sorted(scores["imitation_erk"])
    reference = [scores["imitation_erk"][u] for u in units]
    rows = {}
    for label, by_unit in scores.items():
        values = [by_unit[u] for u in units]
        diff = paired_interval(values, reference)
        per_density = {
            str(d): paired_interval(
                [by_unit[u] for u in units if u[1] == d],
                [scores["imitation_erk"][u] for u in units if u[1] == d],
            ).mean
            for d in densities
        }
        rows[label] = {
            "mean": sum(values) / len(values),
            "minus_imitation": {"mean": diff.mean, "low": diff.low, "high": diff.high},
            "minus_imitation_by_density": per_density,
        }
        print(f"{label:28s} {rows[label]['mean']:.4f}  Δ {diff.mean:+.4f} "
              f"[{diff.low:+.4f}, {diff.high:+.4f}]")  # fmt: skip
    report = {
        "machine": {**machine_info(), "commit": commit.strip()},
        "what": "scores of simple policies inside Emrakul's action space on seeds that no table "
        "reports, paired with the imitation at ERK (issue 24's headroom)",
        "seeds": list(seeds),
        "densities": list(densities),
        "host": args.host,
        "streams": [s.name for s in streams],
        "refused_streams": refused,
        "checkpoints": {
            "imitation": {"path": args.imitation, "sha256": _sha(args.imitation)},
            "trained": {"path": args.trained, "sha256": _sha(args.trained)},
        },
        "wall_s": time.perf_counter() - started,
        "conditions": rows,
        "runs": _runs(scores),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
