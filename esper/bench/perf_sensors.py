"""Performance benchmarks of the Nervous System (``esper.workloads.sensors``).

All on a LeNet-300-100 shaped MLP (784-300-100-10) with a batch of 128 random inputs unless
said otherwise, each measured side by side with its anchor in one process (alternating runs,
medians). Importing this module registers the benchmarks in :data:`PERF`.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.bench.anchors import import_backpack
from esper.bench.harness import PERF, BenchResult, median_time, paired_median_times
from esper.seeding import generator
from esper.workloads.hosts import make_host
from esper.workloads.sensors import NervousSystem, gradient_statistics, hutchinson

__all__ = [
    "fisher_gsnr_vs_step",
    "hutchinson_vs_step",
    "naive_vs_ours",
    "sensing_scaling_exponent",
    "variance_vs_backpack",
]

_BATCH = 128
_HIDDEN = (300, 100)


def _batch(batch: int = _BATCH) -> tuple[Tensor, Tensor]:
    g = generator(0, "bench", "sensors", "batch")
    return torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g)


def _lenet(hidden: Sequence[int] = _HIDDEN) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make_host("mlp", (784,), 10, hidden=tuple(hidden))


def _sequential_lenet() -> nn.Sequential:
    """The same network as a Sequential, the form BackPACK's ``extend`` handles natively."""
    host = _lenet()
    layers: list[nn.Module] = []
    for i, linear in enumerate(host.layers):  # type: ignore[arg-type]
        layers += [linear] if i == len(host.layers) - 1 else [linear, nn.ReLU()]  # type: ignore[arg-type]
    return nn.Sequential(*layers)


def _plain_step(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    """One plain training step's forward and backward (``.grad`` reset as ``zero_grad`` does)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return step


@PERF.register("fisher_gsnr_vs_step")
def fisher_gsnr_vs_step() -> BenchResult:
    """Fisher diagonal + GSNR + coherence of every layer ÷ one plain training step."""
    model, (x, y) = _lenet(), _batch()
    ours_s, step_s = paired_median_times(
        lambda: gradient_statistics(model, x, y), _plain_step(model, x, y), repeats=60, warmup=5
    )
    return BenchResult(
        ours_s=ours_s,
        anchor="one plain training step (forward + backward)",
        anchor_s=step_s,
        ratio=ours_s / step_s,
        goal=1.5,
        direction="<=",
        notes="LeNet-300-100, batch 128; per-weight Fisher, GSNR and per-layer coherence",
    )


@PERF.register("hutchinson_vs_step")
def hutchinson_vs_step() -> BenchResult:
    """One Hutchinson probe over every layer ÷ one plain training step."""
    model, (x, y) = _lenet(), _batch()
    g = generator(0, "bench", "sensors", "probes")
    ours_s, step_s = paired_median_times(
        lambda: hutchinson(model, x, y, probes=1, generator=g),
        _plain_step(model, x, y),
        repeats=60,
        warmup=5,
    )
    return BenchResult(
        ours_s=ours_s,
        anchor="one plain training step (forward + backward)",
        anchor_s=step_s,
        ratio=ours_s / step_s,
        goal=3.0,
        direction="<=",
        notes="LeNet-300-100, batch 128; forward-over-reverse HVP, trace and diagonal per layer",
    )


@PERF.register("variance_vs_backpack")
def variance_vs_backpack() -> BenchResult:
    """Per-weight gradient variance: ours ÷ BackPACK's ``Variance`` extension."""
    extend, backpack, variance = import_backpack()
    ours_model = _sequential_lenet()
    theirs = extend(copy.deepcopy(ours_model))
    x, y = _batch()

    def anchor() -> None:
        theirs.zero_grad(set_to_none=True)
        loss = F.cross_entropy(theirs(x), y)
        with backpack(variance()):
            loss.backward()

    ours_s, anchor_s = paired_median_times(
        lambda: gradient_statistics(ours_model, x, y), anchor, repeats=60, warmup=5
    )
    return BenchResult(
        ours_s=ours_s,
        anchor="BackPACK Variance (extended backward pass)",
        anchor_s=anchor_s,
        ratio=ours_s / anchor_s,
        goal=0.7,
        direction="<=",
        notes="same LeNet-300-100 (Sequential) and batch of 128; ours also yields Fisher, "
        "GSNR and coherence",
    )


def _naive_statistics(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Fisher, GSNR and coherence from a Python loop over samples, one backward each."""
    params = [p for p in model.parameters() if p.dim() > 1]
    sums = [torch.zeros_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    for b in range(x.shape[0]):
        grads = torch.autograd.grad(F.cross_entropy(model(x[b : b + 1]), y[b : b + 1]), params)
        for s, q, g in zip(sums, squares, grads, strict=True):
            s += g
            q += g * g
    out: dict[str, Tensor] = {}
    for i, (s, q) in enumerate(zip(sums, squares, strict=True)):
        mean, fisher = s / x.shape[0], q / x.shape[0]
        out[f"gsnr{i}"] = mean**2 / (fisher - mean**2).clamp_min(1e-12)
        out[f"fisher{i}"] = fisher
        out[f"coherence{i}"] = (mean**2).sum() / fisher.sum()
    return out


@PERF.register("naive_vs_ours")
def naive_vs_ours() -> BenchResult:
    """A per-sample Python loop ÷ ours, for the same Fisher, GSNR and coherence."""
    model, (x, y) = _lenet(), _batch()
    naive_s, ours_s = paired_median_times(
        lambda: _naive_statistics(model, x, y),
        lambda: gradient_statistics(model, x, y),
        repeats=7,
        warmup=1,
    )
    return BenchResult(
        ours_s=ours_s,
        anchor="per-sample Python loop (128 backward passes)",
        anchor_s=naive_s,
        ratio=naive_s / ours_s,
        goal=20.0,
        direction=">=",
        notes="LeNet-300-100, batch 128; ratio = naive ÷ ours",
    )


@PERF.register("sensing_scaling_exponent")
def sensing_scaling_exponent() -> BenchResult:
    """Log-log slope of a full ``NervousSystem.sense`` time against parameter count."""
    x, y = _batch()
    sizes, times = [], []
    for scale in (0.5, 1.0, 2.0, 4.0):
        model = _lenet([round(w * scale) for w in _HIDDEN])
        system = NervousSystem()
        system.prepare(model, x)
        sizes.append(sum(p.numel() for p in model.parameters()))

        def sense(model: nn.Module = model, system: NervousSystem = system) -> None:
            system.sense(model, x, y)

        times.append(median_time(sense, repeats=9, warmup=2))
    lx = [math.log(s) for s in sizes]
    ly = [math.log(t) for t in times]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )
    return BenchResult(
        ours_s=times[-1],
        anchor=f"sense() at the smallest size ({sizes[0]} parameters)",
        anchor_s=times[0],
        ratio=slope,
        goal=1.1,
        direction="<=",
        notes="full NervousSystem.sense (1 Hutchinson probe) on MLPs 784-h1-h2-10 with hidden "
        f"widths x0.5..x4 of (300, 100): {sizes} parameters, "
        f"{[round(t * 1e3, 2) for t in times]} ms",
    )
