"""Where one cohort member's time goes between its training steps, at the demo's sizes.

Issue 27's ``cohort_rollout_speedup_8`` leaves about 17 ms per member and surgery outside the
batched training (Emrakul's decision, the surgery, sensing and scoring). This script breaks that
down for one organism at the same sizes (digits MLP 64-128-128-10, batch 32, K = 25, density
0.1, one torch thread):

* a reading (``Organism._sense``) by the full pass and fused into the training steps
  (``workload.organism.sensors.fused``), medians over 30 surgeries each;
* an untrained Emrakul's surgeries profiled with :mod:`cProfile` (40 surgeries after 5 of
  warm-up): the cumulative time per surgery of the named parts. cProfile's own overhead
  inflates every part by a similar factor; the shares are what to read.

Usage: ``.venv/bin/python benchmarks/member_costs.py OUT.json`` (about a minute).
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from typing import Any

from esper.bench.harness import script_output, write_report
from esper.conf import compose
from esper.policies.base import make_policy
from esper.threads import one_thread
from esper.workloads.factory import build_organism

OVERRIDES = ["policy=emrakul", "policy.density=0.1", "policy.surgery_interval=25"]
PARTS = {  # label: (file suffix, function name) as cProfile names them
    "surgery (whole step)": ("workloads/organism.py", "step"),
    "training steps": ("workloads/organism.py", "train_steps"),
    "reading": ("sensors/nervous_system.py", "sense"),
    "  Hutchinson": ("sensors/hessian.py", "hutchinson"),
    "  gradient statistics": ("sensors/gradients.py", "gradient_statistics"),
    "  activity": ("sensors/activity.py", "activity_statistics"),
    "impact encoder update": ("sensors/impact.py", "train_encoder_on_impact"),
    "Emrakul's decision": ("emrakul/policy.py", "decide"),
    "  rankings": ("emrakul/actions.py", "rank_normalise"),
    "surgery's begin": ("workloads/organism.py", "begin"),
    "  spike probe": ("workloads/spike.py", "probe_loss"),
}


def reading_ms(fused: bool) -> float:
    """Median time of one organism's reading after its K steps, RigL surgeries between."""
    cfg = compose([*OVERRIDES, f"workload.organism.sensors.fused={str(fused).lower()}"])
    organism = build_organism(cfg, 0)
    step = organism.reset()
    surgeon = make_policy("rigl")
    surgeon.reset(organism, step)
    times = []
    for surgery in range(30):
        begun = organism.begin(surgeon.act(organism, step))
        events, diverged = organism.train_steps()
        start = time.perf_counter()
        organism._sense()  # the reading finish() makes, timed alone
        if surgery >= 5:
            times.append(time.perf_counter() - start)
        step = organism.finish(begun, events, diverged)
    return 1e3 * statistics.median(times)


def profiled_ms(surgeries: int = 40) -> dict[str, float]:
    """Cumulative milliseconds per surgery of :data:`PARTS` for an untrained Emrakul."""
    organism = build_organism(compose(OVERRIDES), 0)
    step = organism.reset()
    policy = make_policy("emrakul")
    policy.reset(organism, step)
    for _ in range(5):
        step = organism.step(policy.act(organism, step))
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(surgeries):
        step = organism.step(policy.act(organism, step))
    profile.disable()
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    out = {}
    for label, (suffix, name) in PARTS.items():
        total = sum(v[3] for (f, _, fn), v in stats.items() if f.endswith(suffix) and fn == name)
        out[label] = 1e3 * total / surgeries
    return out


def main() -> None:
    out, machine = script_output(__doc__.split("\n", 1)[0])
    with one_thread():
        readings = {"full_ms": reading_ms(False), "fused_ms": reading_ms(True)}
        parts = profiled_ms()
    report = {
        "what": "one organism at cohort_rollout_speedup_8's sizes: a reading full vs fused, "
        "and an untrained Emrakul's surgery profiled (cProfile, ms per surgery)",
        "reading": readings,
        "profile_ms_per_surgery": parts,
    }
    write_report(out, machine, report)


if __name__ == "__main__":
    main()
