"""Would batching the Hutchinson probe over a cohort's members pay? Measured.

Issue 27 asks the cohort's per-member work (sensing, decisions, scoring) to be vectorized over
its members. The largest part of a reading at the demo's sizes is the Hutchinson probe (one
Hessian-vector product per reading, forward-over-reverse). This script times, for the 8
members of a cohort at ``cohort_rollout_speedup_8``'s sizes (digits MLP 64-128-128-10, the
reading's 4 × 32 samples, one torch thread):

* one by one: :func:`esper.workloads.sensors.hessian.hutchinson` on each member, as each
  organism's nervous system runs it;
* together: every member's probe (drawn as ``hutchinson`` draws it) as the tangent of the
  stacked parameters, one forward-over-reverse pass through the cohort's
  :meth:`~esper.workloads.hosts.Host.stacked_forward` (members share no parameter, so the
  Hessian is block-diagonal and one pass gives every member's ``Hv``).

It checks that both give the same per-layer traces, and records both times. Usage:
``.venv/bin/python benchmarks/cohort_hutchinson.py OUT.json`` (seconds).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD

from esper.bench.harness import script_output, write_report
from esper.conf import compose
from esper.threads import one_thread
from esper.workloads.cohort import Cohort
from esper.workloads.factory import build_organism
from esper.workloads.sensors.hessian import hutchinson, rademacher

MEMBERS = 8
OVERRIDES = ["policy=emrakul", "policy.density=0.1", "policy.surgery_interval=25"]


def _probe(host: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The Rademacher probe ``hutchinson`` draws first from a generator seeded 1."""
    named = dict(host.named_parameters())
    sizes = [named[n].numel() for n in names]
    flat = rademacher(sum(sizes), torch.Generator().manual_seed(1))
    return {n: v.view(named[n].shape) for n, v in zip(names, flat.split(sizes), strict=True)}


def main() -> None:
    out, machine = script_output(__doc__.split("\n", 1)[0])
    with one_thread():
        cohort = Cohort([build_organism(compose(OVERRIDES), r) for r in range(MEMBERS)])
        cohort.reset()
        members = cohort.members
        xs = [torch.cat([b.x for b in m._recent]) for m in members]
        ys = [torch.cat([b.y for b in m._recent]) for m in members]
        names = members[0].scalpel.names
        every = [n for n, _ in cohort.template.named_parameters()]

        def one_by_one() -> list[dict[str, float]]:
            out = []
            for m, x, y in zip(members, xs, ys, strict=True):
                stats = hutchinson(m.host, x, y, params=names, generator=torch.Generator()
                                   .manual_seed(1), masks=m.scalpel.masks())  # fmt: skip
                out.append({n: stats[n].trace for n in names})
            return out

        def together() -> list[dict[str, float]]:
            named = [dict(m.host.named_parameters()) for m in members]
            probes = [_probe(m.host, names) for m in members]
            params = [torch.stack([p[n].detach() for p in named]) for n in every]
            tangents = [
                torch.stack([v[n] for v in probes]) if n in names else torch.zeros_like(p)
                for n, p in zip(every, params, strict=True)
            ]
            with fwAD.dual_level():
                duals = [fwAD.make_dual(p.requires_grad_(True), t)
                         for p, t in zip(params, tangents, strict=True)]  # fmt: skip
                logits = cohort.template.stacked_forward(duals, torch.stack(xs))
                logp = torch.log_softmax(logits, -1)
                loss = -logp.gather(-1, torch.stack(ys)[..., None]).squeeze(-1).mean(-1).sum()
                primal = fwAD.unpack_dual(loss).primal
                seed = fwAD.make_dual(torch.ones_like(primal), torch.zeros_like(primal))
                hv = [fwAD.unpack_dual(g).tangent for g in torch.autograd.grad(loss, duals, seed)]
            out = []
            for i, m in enumerate(members):
                traces = {}
                for j, n in enumerate(every):
                    if n in names:
                        product = tangents[j][i] * hv[j][i]
                        traces[n] = float(product[m.scalpel.mask(n)].sum())
                out.append(traces)
            return out

        alone, stacked = one_by_one(), together()
        gap = max(abs(a[n] - b[n]) for a, b in zip(alone, stacked, strict=True) for n in names)
        times: dict[str, list[float]] = {"one_by_one": [], "together": []}
        for repeat in range(14):
            for label, fn in (("one_by_one", one_by_one), ("together", together)):
                start = time.perf_counter()
                fn()
                if repeat >= 2:
                    times[label].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    report: dict[str, Any] = {
        "what": "8 cohort members' Hutchinson probes one by one vs one stacked "
        "forward-over-reverse pass (digits MLP 64-128-128-10, 128 samples each, one thread)",
        "max_trace_difference": gap,
        "one_by_one_ms": 1e3 * medians["one_by_one"],
        "together_ms": 1e3 * medians["together"],
        "speedup": medians["one_by_one"] / medians["together"],
        "per_member_ms": 1e3 * medians["together"] / MEMBERS,
    }
    write_report(out, machine, report)
    if gap > 1e-3:
        raise SystemExit(f"the stacked traces differ from the per-member ones by {gap}")


if __name__ == "__main__":
    main()
