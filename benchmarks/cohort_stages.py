"""Which of a cohort member's per-surgery stages pay to batch over the members? Measured.

Issue 27 asks the cohort's per-member work (readings, Emrakul's decisions, scoring and the
spike control) to be vectorized over its members. Batching removes per-call overhead, not
arithmetic, so it pays only where a stage's calls are overhead-bound. This script times each
stage for the 8 members of a cohort at ``cohort_rollout_speedup_8``'s sizes (digits MLP
64-128-128-10, batch 32, K = 25, density 0.1, one torch thread), one member after another and
batched over the member axis, on the members' own tensors after a surgery (the activity spectra
on random activations of the layers' shapes: their cost does not depend on the values):

* ``spike control``: :func:`~esper.workloads.spike.probe_loss` per member vs
  :func:`~esper.workloads.spike.stacked_probe_losses` (built: the cohort runs it, twice a
  surgery);
* ``Emrakul's networks``: the Specialists' and the General's action distributions per member
  vs one forward over every member's rows (members sharing one policy version);
* ``rankings``: :func:`~esper.policies.emrakul.actions.rank_normalise` of a layer's scores per
  member vs one stable radix order of the stacked ``[members, weights]`` scores (the same
  ranks, checked), counted as often as a decision ranks (counted on real decisions);
* ``activity spectra``: the singular values of each layer's activations per member
  (:func:`~esper.workloads.sensors.activity.singular_values`) vs one batched ``eigvalsh``;
* ``gradient statistics``: :func:`~esper.workloads.sensors.gradients.gradient_statistics` per
  member vs the arithmetic floor of a stacked one: a forward and backward of the stacked hosts
  keeping each layer's inputs and output gradients, and per layer the product
  ``(δ²)ᵀ(a²)`` (nothing else a real one needs is timed, so this bounds it from below).

The Hutchinson probe's batching was measured by ``benchmarks/cohort_hutchinson.py``
(``benchmarks/results/cohort-hutchinson.json``: 1.08x). The script then times the rollout of
``cohort_rollout_speedup_8`` itself and projects its ratio if every stage above that pays were
batched at its measured speed (and the others left as they are).

Usage: ``.venv/bin/python benchmarks/cohort_stages.py OUT.json`` (about 20 seconds).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from esper.bench.harness import alternating_median_times, script_output, write_report
from esper.bench.perf_throughput import _ROLLOUT_OVERRIDES, _emrakul, cohort_rollout_speedup_8
from esper.conf import compose
from esper.policies.emrakul import actions as emrakul_actions
from esper.policies.emrakul.actions import rank_normalise
from esper.threads import one_thread
from esper.workloads.cohort import Cohort
from esper.workloads.factory import build_organism
from esper.workloads.sensors.activity import singular_values
from esper.workloads.sensors.gradients import gradient_statistics
from esper.workloads.spike import probe_loss, stacked_probe_losses

MEMBERS = 8
EPISODE = 3  # surgeries per episode in cohort_rollout_speedup_8
HUTCHINSON = Path(__file__).parent / "results" / "cohort-hutchinson.json"


def stacked_ranks(scores: torch.Tensor) -> torch.Tensor:
    """``rank_normalise`` of every row of ``scores`` ``[rows, n]`` in one stable radix order."""
    flat = scores.detach().float().numpy()
    flat = np.where(np.isfinite(flat), flat, np.float32(-np.inf))
    bits = (flat + np.float32(0.0)).view(np.uint32)
    key = np.where((bits >> 31).astype(bool), ~bits, bits | np.uint32(0x80000000))
    low = np.argsort((key & 0xFFFF).astype(np.uint16), axis=-1, kind="stable")
    high_keys = (np.take_along_axis(key, low, -1) >> 16).astype(np.uint16)
    order = np.take_along_axis(low, np.argsort(high_keys, axis=-1, kind="stable"), -1)
    rows, n = flat.shape
    ranks = np.empty((rows, n), dtype=np.float32)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(n, dtype=np.float32), (rows, n)), -1)
    return torch.from_numpy(ranks / np.float32(max(n - 1, 1)))


def _rank_each(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    return [rank_normalise(s) for s in scores]


def ranks_per_decision(cohort: Cohort, steps: list[Any], policies: list[Any]) -> float:
    """How many layer rankings an Emrakul decision makes, counted on real decisions."""
    calls = 0
    original = emrakul_actions.rank_normalise

    def counted(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return original(x)

    emrakul_actions.rank_normalise = counted
    try:
        for member, step, policy in zip(cohort.members, steps, policies, strict=True):
            policy.decide(member, step, explore=True)
    finally:
        emrakul_actions.rank_normalise = original
    return calls / len(policies)


def stacked_gradient_floor(
    weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> list[torch.Tensor]:
    """The arithmetic a stacked gradient-statistics pass cannot avoid, for an MLP of stacked
    ``weights`` ``[N, out, in]``: forward, the output gradients' backward, ``(δ²)ᵀ(a²)``."""
    inputs, outputs = [], []
    h = x.flatten(2)
    for j, (w, b) in enumerate(zip(weights, biases, strict=True)):
        inputs.append(h)
        z = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)).requires_grad_()
        outputs.append(z)
        h = torch.relu(z) if j < len(weights) - 1 else z
    loss = F.cross_entropy(h.flatten(0, 1), y.flatten(), reduction="sum")
    grads = torch.autograd.grad(loss, outputs)
    return [torch.bmm((g * g).transpose(1, 2), a * a) for g, a in zip(grads, inputs, strict=True)]


def stage(each: Callable[[], object], together: Callable[[], object], calls: float) -> dict:
    """Median ms of the members one by one and batched, and the saving per member-surgery."""
    t_each, t_together = alternating_median_times([each, together], 15, 3)
    return {
        "one_by_one_ms": 1e3 * t_each,
        "batched_ms": 1e3 * t_together,
        "speedup": t_each / t_together,
        "calls_per_surgery": calls,
        "saving_ms_per_member_surgery": 1e3 * (t_each - t_together) * calls / MEMBERS,
    }


def main() -> None:
    out, machine = script_output(__doc__.split("\n", 1)[0])
    cfg = compose(list(_ROLLOUT_OVERRIDES))
    stages: dict[str, dict] = {}
    with one_thread():
        cohort = Cohort([build_organism(cfg, r) for r in range(MEMBERS)])
        steps = cohort.reset()
        members = cohort.members
        policies = [
            _emrakul(cfg, r, m, s) for r, (m, s) in enumerate(zip(members, steps, strict=True))
        ]
        steps = cohort.step(
            [p.decide(m, s) for p, m, s in zip(policies, members, steps, strict=True)]
        )
        kind, device = members[0].kind, members[0].device

        probes = [m.stream.peek(m.spike_window) for m in members]
        hosts = [m.host for m in members]
        stages["spike control (built)"] = stage(
            lambda: [
                probe_loss(m.host, p, kind, device) for m, p in zip(members, probes, strict=True)
            ],
            lambda: stacked_probe_losses(cohort.template, hosts, probes, kind, device),
            calls=2,
        )

        inputs = [p.inputs(m, s) for p, m, s in zip(policies, members, steps, strict=True)]
        specialist, general = policies[0].specialist, policies[0].general
        assert specialist is not None and general is not None
        obs, ids = torch.cat([i[0] for i in inputs]), torch.cat([i[1] for i in inputs])
        states = torch.stack([i[2] for i in inputs])

        def networks_each() -> None:
            with torch.no_grad():
                for o, i, s in inputs:
                    specialist.distribution(o, i)
                    general.distribution(s.unsqueeze(0))

        def networks_together() -> None:
            with torch.no_grad():
                specialist.distribution(obs, ids)
                general.distribution(states)

        stages["Emrakul's networks"] = stage(networks_each, networks_together, calls=1)

        per_decision = ranks_per_decision(cohort, steps, policies)
        names = members[0].scalpel.names
        for name in names:
            scores = [m.scalpel.dense_grad(name).reshape(-1).abs() for m in members]
            stacked = torch.stack(scores)
            same = torch.equal(torch.stack([rank_normalise(s) for s in scores]),
                               stacked_ranks(stacked))  # fmt: skip
            if not same:
                raise SystemExit(f"{name}: the stacked ranks differ from rank_normalise's")
            stages[f"rankings {name} ({stacked.shape[1]} weights)"] = stage(
                functools.partial(_rank_each, scores),
                functools.partial(stacked_ranks, stacked),
                calls=per_decision / len(names),
            )

        samples = members[0].sense_batches * members[0].stream.batch_size
        units = [members[0].scalpel.mask(n).shape[0] for n in names]
        acts = [[torch.relu(torch.randn(samples, u)) for u in units] for _ in members]

        def spectra_each() -> None:
            for per_member in acts:
                for a in per_member:
                    singular_values(a)

        def spectra_together() -> None:
            for j in range(len(units)):
                m = torch.stack([a[j] for a in acts]).double()
                grams = m.transpose(1, 2) @ m if m.shape[1] >= m.shape[2] else m @ m.transpose(1, 2)
                torch.linalg.eigvalsh(grams).clamp_min(0.0).sqrt()

        stages["activity spectra"] = stage(spectra_each, spectra_together, calls=1)

        xs = [torch.cat([b.x for b in m._recent]) for m in members]
        ys = [torch.cat([b.y for b in m._recent]) for m in members]
        c = members[0].nervous.config
        named = [dict(m.host.named_parameters()) for m in members]
        every = [n for n, _ in cohort.template.named_parameters()]
        weights = [torch.stack([p[n].detach() for p in named]) for n in every[0::2]]
        biases = [torch.stack([p[n].detach() for p in named]) for n in every[1::2]]
        x, y = torch.stack(xs), torch.stack(ys)

        def statistics_each() -> None:
            for m, xi, yi in zip(members, xs, ys, strict=True):
                gradient_statistics(m.host, xi, yi, params=names, masks=m.scalpel.masks(),
                                    boundary_quantile=c.boundary_quantile,
                                    keep_outputs=True)  # fmt: skip

        stages["gradient statistics (batched: arithmetic floor)"] = stage(
            statistics_each, lambda: stacked_gradient_floor(weights, biases, x, y), calls=1
        )

    rollout = cohort_rollout_speedup_8()
    saving = sum(  # batching only where it pays
        max(0.0, s["saving_ms_per_member_surgery"]) for k, s in stages.items() if "built" not in k
    )
    hutchinson = json.loads(HUTCHINSON.read_text())
    saving_h = (hutchinson["one_by_one_ms"] - hutchinson["together_ms"]) / MEMBERS
    per_round = MEMBERS * EPISODE
    cohort_s = rollout.ours_s - 1e-3 * (saving + saving_h) * per_round
    report: dict[str, Any] = {
        "what": "8 cohort members' per-surgery stages one by one vs batched over the member "
        "axis (ms for all 8), at cohort_rollout_speedup_8's sizes, one thread; and that "
        "benchmark's ratio projected with every stage that pays batched at its measured speed",
        "stages": stages,
        "hutchinson_saving_ms_per_member_surgery": saving_h,
        "rollout": {
            "one_after_another_ms": 1e3 * rollout.anchor_s,
            "cohort_ms": 1e3 * rollout.ours_s,
            "ratio": rollout.ratio,
            "goal": rollout.goal,
            "notes": rollout.notes,
        },
        "unbuilt_saving_ms_per_member_surgery": saving + saving_h,
        "projected_ratio_batched_where_it_pays": rollout.anchor_s / cohort_s,
    }
    write_report(out, machine, report)


if __name__ == "__main__":
    main()
