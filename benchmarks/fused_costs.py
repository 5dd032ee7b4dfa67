"""Where ``fused_sensing_vs_step``'s time above its arithmetic floor goes.

``fused_sensing_vs_step`` times the organism's fused path (4 training steps recorded by
:class:`~esper.workloads.sensors.fused.TrainingTraffic`, then its ``report``) against the same
4 steps unrecorded, LeNet-300-100 at density 0.1, batch 128, one thread. This script splits
that time, on the benchmark's own setup:

* the fused path and the 4 recorded steps, each against the 4 plain ones (medians of 40 timed
  in turn, in pairs as the benchmark times them): the recording's overhead (the hooks and the
  window's gradient sums) and the report (the difference);
* the report profiled with :mod:`cProfile` (200 reports): the cumulative time per report of its
  parts (the Fisher products, joining the window, reordering its rows for the boundary split,
  the summaries' passes). cProfile inflates every part by a similar factor; the shares are what
  to read.

In a fresh process glibc maps the report's large temporaries afresh at every reading (page
faults); with ``ESPER_KEEP_FREED_MEMORY=1`` (:mod:`esper.allocator`) it keeps them. The JSON
records which.

Usage: ``[ESPER_KEEP_FREED_MEMORY=1] .venv/bin/python benchmarks/fused_costs.py OUT.json``
(seconds).
"""

from __future__ import annotations

import cProfile
import pstats
from typing import Any

import torch

from esper import allocator
from esper.bench.harness import alternating_median_times, script_output, write_report
from esper.bench.perf_sensors import _batch, _lenet
from esper.threads import one_thread
from esper.workloads.prequential import train_step
from esper.workloads.scalpel import Scalpel
from esper.workloads.sensors.config import SensorConfig
from esper.workloads.sensors.fused import TrainingTraffic
from esper.workloads.stream import Batch

STEPS = 4
NAMES = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
PARTS = {  # label: (file suffix or "~" for a builtin, function name) as cProfile names them
    "Fisher products but the boundary slice (addmm)": ("~", "<built-in method torch.addmm>"),
    "  boundary slice (mm)": ("~", "<built-in method torch.mm>"),
    "joining the window (cat)": ("~", "<built-in method torch.cat>"),
    "reordering rows (index_select)": (
        "~",
        "<method 'index_select' of 'torch._C.TensorBase' objects>",
    ),
    "gathering rows (index_copy_)": (
        "~",
        "<method 'index_copy_' of 'torch._C.TensorBase' objects>",
    ),
    "summaries (finish_statistics)": ("sensors/gradients.py", "finish_statistics"),
    "report (whole)": ("sensors/fused.py", "report"),
}


def _organism() -> tuple[torch.nn.Module, Scalpel, torch.optim.Optimizer]:
    model = _lenet()
    scalpel = Scalpel(model, "masked", density=0.1, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scalpel.bind_optimizer(optimizer)
    return model, scalpel, optimizer


def main() -> None:
    out, machine = script_output(__doc__.split("\n", 1)[0])
    kept = allocator.from_environment()
    x, y = _batch()
    batches = [Batch(x, y, k, 0, 0, "bench", 0.0, 0.0) for k in range(STEPS)]
    fused, fused_scalpel, fused_opt = _organism()
    plain, plain_scalpel, plain_opt = _organism()
    traffic = TrainingTraffic(fused, NAMES, STEPS)
    masks = fused_scalpel.masks()
    quantile = SensorConfig().boundary_quantile

    def recorded() -> None:
        traffic.clear()
        with fused_scalpel.explicit_grad_masking() as mask:
            for batch in batches:
                with traffic.record(batch.y, dense_grads=True):
                    train_step(fused, fused_opt, batch, "classification", None, mask)

    def report() -> None:
        traffic.report(masks, boundary_quantile=quantile)

    def unrecorded() -> None:
        with plain_scalpel.explicit_grad_masking() as mask:
            for batch in batches:
                train_step(plain, plain_opt, batch, "classification", None, mask)

    def fused_path() -> None:
        recorded()
        report()

    with one_thread():
        # in pairs, as the benchmark times: other interleavings change how often glibc maps
        # the report's large temporaries afresh (page faults), which is not this path's cost
        t_path, t_plain = alternating_median_times([fused_path, unrecorded], 40, 5)
        t_recorded, t_plain_again = alternating_median_times([recorded, unrecorded], 40, 5)
        recorded()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(200):
            report()
        profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    parts = {}
    for label, (suffix, function) in PARTS.items():
        total = sum(
            row[3]
            for (path, _, name), row in stats.items()
            if name == function and (suffix == "~" or path.endswith(suffix))
        )
        parts[label] = 1e3 * total / 200
    result: dict[str, Any] = {
        "what": "fused_sensing_vs_step's setup (LeNet-300-100, density 0.1, batch 128, 4 steps, "
        "one thread): its time split, medians of 40 timed in turn (ms), and its report "
        "profiled (cProfile, ms per report)",
        "kept_freed_memory": kept,
        "fused_path_ms": 1e3 * t_path,
        "plain_steps_ms": 1e3 * t_plain,
        "ratio": t_path / t_plain,
        "recorded_steps_ms": 1e3 * t_recorded,
        "recording_overhead_ms": 1e3 * (t_recorded - t_plain_again),
        "report_ms": 1e3 * (t_path - t_recorded),
        "report_profile_ms": parts,
    }
    write_report(out, machine, result)


if __name__ == "__main__":
    main()
