"""The full reading against a training step on a wide MLP: ``sense_vs_step_cuda`` and its CPU
counterpart ``sense_vs_step_cpu``.

Both time :meth:`NervousSystem.sense <esper.workloads.sensors.NervousSystem.sense>` at a batch of
128 against one SGD step at a batch of 512 on a 784-4096-4096-10 MLP (20M weights), and split
the reading into its gradient pass (Fisher, GSNR, coherence, layer outputs), its Hutchinson
probe and the rest (unit activity, features, topology GNN, impact predictor). They also time
the fused reading: the same ``sense`` summing its statistics from the traffic of four recorded
training steps of 32 samples (``workload.organism.sensors.fused``) instead of a gradient pass.

On a GPU the wide MLP's arithmetic is cheap and a reading is bound by what is not arithmetic
(host reads, small solvers, host-built probes); on the CPU it is bound by arithmetic, so the CPU
number checks that the reading's FLOPs stay within the goal, not its launch and sync costs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from esper.bench.harness import (
    PERF,
    BenchResult,
    SkipBenchmark,
    Timer,
    alternating_median_times,
    cuda_median_times,
)
from esper.seeding import generator
from esper.workloads.hosts import make_host
from esper.workloads.sensors import NervousSystem, gradient_statistics, hutchinson
from esper.workloads.sensors.fused import TrainingTraffic

__all__ = ["sense_vs_step_cpu", "sense_vs_step_cuda"]

_GOAL = 3.0
_STEP_BATCH, _SENSE_BATCH, _FUSED_STEPS = 512, 128, 4


def _sense_against_step(device: torch.device, timer: Timer, where: str) -> BenchResult:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make_host("mlp", (784,), 10, hidden=(4096, 4096)).to(device)
    g = generator(0, "bench", "sensors", "wide")
    x = torch.randn(_STEP_BATCH, 784, generator=g).to(device)
    y = torch.randint(0, 10, (_STEP_BATCH,), generator=g).to(device)
    xs, ys = x[:_SENSE_BATCH], y[:_SENSE_BATCH]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    system = NervousSystem()
    system.prepare(model, xs)
    names = list(system.graph.names)
    traffic = TrainingTraffic(model, names, _FUSED_STEPS)
    still = torch.optim.SGD(model.parameters(), lr=0.0)  # records steps without moving
    for xb, yb in zip(xs.chunk(_FUSED_STEPS), ys.chunk(_FUSED_STEPS), strict=True):
        with traffic.record(yb):
            still.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            still.step()
    c = system.config
    probe = generator(0, "bench", "sensors", "probe")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def gradients() -> None:
        gradient_statistics(model, xs, ys, params=names, keep_outputs=True,
                            boundary_quantile=c.boundary_quantile)  # fmt: skip

    step_s, sense_s, fused_s, grad_s, hutch_s = timer([
        step,
        lambda: system.sense(model, xs, ys),
        lambda: system.sense(model, xs, ys, traffic=traffic),
        gradients,
        lambda: hutchinson(model, xs, ys, params=names, probes=1, generator=probe),
    ])  # fmt: skip
    return BenchResult(
        ours_s=sense_s,
        anchor=f"one training step at batch {_STEP_BATCH} (zero_grad, forward, backward, SGD step)",
        anchor_s=step_s,
        ratio=sense_s / step_s,
        goal=_GOAL,
        direction="<=",
        notes=(
            f"784-4096-4096-10 MLP on {where}; sense() at batch {_SENSE_BATCH}: "
            f"{1000 * sense_s:.1f} ms vs a step {1000 * step_s:.1f} ms. Its parts, timed alone: "
            f"the gradient pass {1000 * grad_s:.1f} ms, one Hutchinson probe "
            f"{1000 * hutch_s:.1f} ms (the rest is their difference). Fused (statistics summed "
            f"from {_FUSED_STEPS} recorded training steps of {_SENSE_BATCH // _FUSED_STEPS}): "
            f"{1000 * fused_s:.1f} ms, {fused_s / step_s:.2f} steps"
        ),
    )


@PERF.register("sense_vs_step_cuda")
def sense_vs_step_cuda() -> BenchResult:
    """Full ``sense()`` (batch 128) ÷ one training step (batch 512) on CUDA, 784-4096-4096-10
    MLP; goal ≤ 3. Skipped without a CUDA device."""
    if not torch.cuda.is_available():
        raise SkipBenchmark("needs a CUDA device")
    return _sense_against_step(
        torch.device("cuda"), cuda_median_times, torch.cuda.get_device_name()
    )


@PERF.register("sense_vs_step_cpu")
def sense_vs_step_cpu() -> BenchResult:
    """``sense_vs_step_cuda`` on the CPU (every torch thread): the reading's arithmetic against
    a step's, where a GPU's launch and sync costs do not count; goal ≤ 3."""

    def timer(fns: list[Callable[[], object]]) -> list[float]:
        return alternating_median_times(fns, repeats=3, warmup=1)

    where = f"the CPU ({torch.get_num_threads()} torch threads)"
    return _sense_against_step(torch.device("cpu"), timer, where)
