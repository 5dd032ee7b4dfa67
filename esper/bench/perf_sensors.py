"""Performance benchmarks of the Nervous System (``esper.workloads.sensors``).

All on a LeNet-300-100 shaped MLP (784-300-100-10) with a batch of 128 random inputs unless
said otherwise, each measured side by side with its anchor in one process (alternating runs,
medians). Both sides run single-threaded, as a Ray replica with one CPU runs the organism
(Ray sets ``OMP_NUM_THREADS=1`` for such workers); on a small shared machine this also keeps
OpenMP barrier stalls out of the ratios. Importing this module registers the benchmarks in
:data:`PERF`.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper.bench.anchors import import_backpack
from esper.bench.harness import PERF, BenchResult, paired_median_times
from esper.seeding import generator
from esper.threads import one_thread
from esper.workloads.hosts import make_host
from esper.workloads.prequential import train_step
from esper.workloads.scalpel import Scalpel
from esper.workloads.sensors import NervousSystem, SensorConfig, gradient_statistics, hutchinson
from esper.workloads.sensors.fused import TrainingTraffic
from esper.workloads.stream import Batch

__all__ = [
    "fisher_gsnr_vs_step",
    "fused_sensing_vs_step",
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
    with one_thread():
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
        notes="LeNet-300-100, batch 128, one thread; per-weight Fisher and GSNR, layer coherence",
    )


@PERF.register("hutchinson_vs_step")
def hutchinson_vs_step() -> BenchResult:
    """One Hutchinson probe over every layer ÷ one plain training step."""
    model, (x, y) = _lenet(), _batch()
    g = generator(0, "bench", "sensors", "probes")
    with one_thread():
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
        notes="LeNet-300-100, batch 128, one thread; forward-over-reverse HVP, trace and diagonal",
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

    with one_thread():
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
        notes="same LeNet-300-100 (Sequential) and batch of 128, one thread; ours also yields "
        "Fisher, GSNR and coherence",
    )


def _naive_statistics(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Fisher, GSNR and coherence the way PyTorch's per-sample-gradients tutorial computes
    per-sample gradients without ``torch.func``: one backward pass per sample, the gradients
    stacked per parameter, the statistics taken over the stack."""
    params = [p for p in model.parameters() if p.dim() > 1]
    sample_grads = [
        torch.autograd.grad(F.cross_entropy(model(x[b : b + 1]), y[b : b + 1]), params)
        for b in range(x.shape[0])
    ]
    out: dict[str, Tensor] = {}
    for i, shards in enumerate(zip(*sample_grads, strict=True)):
        g = torch.stack(shards)  # (B, *shape)
        mean, fisher = g.mean(0), g.square().mean(0)
        mean_sq = mean.square()
        out[f"fisher{i}"] = fisher
        out[f"gsnr{i}"] = mean_sq / (fisher - mean_sq).clamp_min(1e-12)
        out[f"coherence{i}"] = mean_sq.sum() / fisher.sum()
    return out


@PERF.register("naive_vs_ours")
def naive_vs_ours() -> BenchResult:
    """A per-sample Python loop ÷ ours, for the same Fisher, GSNR and coherence."""
    model, (x, y) = _lenet(), _batch()
    with one_thread():
        naive_s, ours_s = paired_median_times(
            lambda: _naive_statistics(model, x, y),
            lambda: gradient_statistics(model, x, y),
            repeats=7,
            warmup=1,
        )
    return BenchResult(
        ours_s=ours_s,
        anchor="per-sample loop (128 backward passes, gradients stacked per parameter)",
        anchor_s=naive_s,
        ratio=naive_s / ours_s,
        goal=20.0,
        direction=">=",
        notes="LeNet-300-100, batch 128, one thread; ratio = naive ÷ ours",
    )


@PERF.register("sensing_scaling_exponent")
def sensing_scaling_exponent() -> BenchResult:
    """Log-log slope of a full ``NervousSystem.sense`` time against parameter count."""
    x, y = _batch()
    systems = []
    for scale in (0.5, 1.0, 2.0, 4.0):
        model = _lenet([round(w * scale) for w in _HIDDEN])
        system = NervousSystem()
        system.prepare(model, x)
        systems.append((model, system))
    sizes = [sum(p.numel() for p in model.parameters()) for model, _ in systems]
    runs: list[list[float]] = [[] for _ in systems]
    with one_thread():
        for repeat in range(11):  # sizes interleaved, so machine noise hits them alike
            for (model, system), seconds in zip(systems, runs, strict=True):
                start = time.perf_counter()
                system.sense(model, x, y)
                if repeat >= 2:  # warm-up
                    seconds.append(time.perf_counter() - start)
    times = [statistics.median(r) for r in runs]
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
        notes="full NervousSystem.sense (1 Hutchinson probe), one thread, on MLPs 784-h1-h2-10 "
        f"with hidden widths x0.5..x4 of (300, 100): {sizes} parameters, "
        f"{[round(t * 1e3, 2) for t in times]} ms",
    )


def _linear_flops(model: nn.Module, batch: int) -> tuple[float, float]:
    """FLOPs of one training step of an MLP and of the Fisher products of fused sensing.

    The step: per Linear layer a forward product, a weight-gradient product and, past the
    first layer, an input-gradient product, ``2·B·in·out`` each; fused sensing adds one product
    ``(δ²)ᵀ(a²)`` of the same size per sensed weight (the per-sample squares' sum)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    sizes = [2.0 * batch * m.in_features * m.out_features for m in linears]
    step = 2 * sum(sizes) + sum(sizes[1:])
    return step, sum(sizes)


@PERF.register("fused_sensing_vs_step")
def fused_sensing_vs_step() -> BenchResult:
    """The organism's fused sensing (``workload.organism.sensors.fused=true``) ÷ plain steps;
    goal ≤ 1.1 × its arithmetic floor.

    Ours: the organism's last ``sense_batches`` (4) training steps of an interval (the window
    cleared first, as the organism's is), each
    recorded by :class:`~esper.workloads.sensors.fused.TrainingTraffic`, then the gradient
    report summed from their traffic (Fisher, GSNR, coherence, boundary Fisher and layer
    outputs). Anchor: the same 4 steps unrecorded. Both are the organism's own training step
    (:func:`~esper.workloads.prequential.train_step` at density 0.1 under the ``masked``
    mechanism's explicit gradient masking, SGD with momentum)."""
    steps, (x, y) = 4, _batch()
    batches = [Batch(x, y, k, 0, 0, "bench", 0.0, 0.0) for k in range(steps)]
    names = ["layers.0.weight", "layers.1.weight", "layers.2.weight"]

    def organism() -> tuple[nn.Module, Scalpel, torch.optim.Optimizer]:
        model = _lenet()
        scalpel = Scalpel(model, "masked", density=0.1, seed=0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scalpel.bind_optimizer(optimizer)
        return model, scalpel, optimizer

    fused, fused_scalpel, fused_opt = organism()
    plain, plain_scalpel, plain_opt = organism()
    traffic = TrainingTraffic(fused, names, steps)
    masks = fused_scalpel.masks()

    def ours() -> None:
        traffic.clear()  # the organism's window begins (Organism.train_steps)
        with fused_scalpel.explicit_grad_masking() as mask:
            for batch in batches:
                with traffic.record(batch.y, dense_grads=True):
                    train_step(fused, fused_opt, batch, "classification", None, mask)
        traffic.report(masks, boundary_quantile=SensorConfig().boundary_quantile)

    def anchor() -> None:
        with plain_scalpel.explicit_grad_masking() as mask:
            for batch in batches:
                train_step(plain, plain_opt, batch, "classification", None, mask)

    with one_thread():
        ours_s, steps_s = paired_median_times(ours, anchor, repeats=40, warmup=5)
    step_flops, fisher_flops = _linear_flops(fused, x.shape[0])
    floor = (step_flops + fisher_flops) / step_flops
    return BenchResult(
        ours_s=ours_s,
        anchor=f"{steps} plain training steps of the organism (the same train_step, unrecorded)",
        anchor_s=steps_s,
        ratio=ours_s / steps_s,
        goal=1.1 * floor,
        direction="<=",
        limit=floor,
        notes=(
            f"LeNet-300-100 at density 0.1, batch {x.shape[0]}, one thread; the organism's fused "
            f"path: {steps} steps recorded by TrainingTraffic (their dense weight gradients summed "
            "as the backward leaves them, for the window's mean) + report() (Fisher, the "
            "boundary Fisher as a slice of the "
            f"same product, GSNR, coherence). Floor {floor:.3f}: FLOPs of a step "
            f"({step_flops / 1e6:.0f} M) plus the Fisher product ({fisher_flops / 1e6:.0f} M), "
            "over the step's. Above it: memory-bound passes (gathering the window's inputs and "
            "output gradients, boundary rows first, and squaring them; the layer outputs' "
            "join; the GSNR's and the masked sums' passes) and the hooks; "
            "benchmarks/fused_costs.py splits it"
        ),
    )
