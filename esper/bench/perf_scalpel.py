"""Performance benchmarks of the Scalpel, each measured side by side with its anchor.

* ``masked_step_vs_dense``: a masked training step ÷ the same unmasked step.
* ``masked_step_vs_torch_prune``: ours ÷ the same step under ``torch.nn.utils.prune`` masks.
* ``mask_update_vs_rigl_torch``: one RigL drop-and-grow update ÷ rigl-torch's ``_rigl_step``.
* ``semi_structured_speedup``: dense ÷ 2:4 semi-structured Linear time (CUDA, capability ≥ 8.0).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune as torch_prune

from esper.bench.anchors import import_rigl_scheduler
from esper.bench.harness import PERF, BenchResult, SkipBenchmark, paired_median_times
from esper.workloads.hosts import MLP
from esper.workloads.scalpel import Scalpel, nm_mask, semi_structured_available, topk_among
from esper.workloads.scalpel.nm import export_semi_structured

__all__ = [
    "mask_update_vs_rigl_torch",
    "masked_step_vs_dense",
    "masked_step_vs_torch_prune",
    "semi_structured_speedup",
]

_BATCH = 128
_STEPS_PER_CALL = 10  # steps per timed call, so timer overhead and jitter average out


def _lenet(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP((784,), 10, hidden=(300, 100))


def _trainer(
    model: nn.Module, optimizer: torch.optim.Optimizer, after: Callable[[], object] | None
) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(_STEPS_PER_CALL, _BATCH, 784, generator=gen)
    ys = torch.randint(0, 10, (_STEPS_PER_CALL, _BATCH), generator=gen)

    def run() -> None:
        for x, y in zip(xs, ys, strict=True):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if after is not None:
                after()

    return run


def _sgd(params: object) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)  # type: ignore[arg-type]


def _masked_lenet() -> tuple[MLP, Scalpel, Callable[[], None]]:
    model = _lenet()
    scalpel = Scalpel(model, "masked", density=0.1, seed=0)
    opt = _sgd(model.parameters())
    scalpel.bind_optimizer(opt)
    return model, scalpel, _trainer(model, opt, scalpel.after_step)


@PERF.register("masked_step_vs_dense")
def masked_step_vs_dense() -> BenchResult:
    """Masked LeNet-300-100 step (90% sparse) ÷ the dense step; goal ≤ 1.10."""
    _, _, ours = _masked_lenet()
    dense = _lenet()
    anchor = _trainer(dense, _sgd(dense.parameters()), None)
    t_ours, t_anchor = paired_median_times(ours, anchor, repeats=40, warmup=5)
    return BenchResult(
        ours_s=t_ours / _STEPS_PER_CALL,
        anchor="dense step (same MLP, no masks)",
        anchor_s=t_anchor / _STEPS_PER_CALL,
        ratio=t_ours / t_anchor,
        goal=1.10,
        direction="<=",
        notes=(
            f"MLP 784-300-100-10, batch {_BATCH}, density 0.1 uniform, SGD momentum 0.9; "
            "forward+backward+step+after_step; medians of 40 calls of "
            f"{_STEPS_PER_CALL} steps"
        ),
    )


@PERF.register("masked_step_vs_torch_prune")
def masked_step_vs_torch_prune() -> BenchResult:
    """Masked step ÷ the same step with ``torch.nn.utils.prune`` masks; goal ≤ 1.0."""
    _model, scalpel, ours = _masked_lenet()
    pruned = _lenet()
    for name, module in pruned.named_modules():
        if isinstance(module, nn.Linear):
            torch_prune.custom_from_mask(module, "weight", scalpel.mask(f"{name}.weight").clone())
    anchor = _trainer(pruned, _sgd(pruned.parameters()), None)
    t_ours, t_anchor = paired_median_times(ours, anchor, repeats=40, warmup=5)
    return BenchResult(
        ours_s=t_ours / _STEPS_PER_CALL,
        anchor="torch.nn.utils.prune.custom_from_mask on each Linear",
        anchor_s=t_anchor / _STEPS_PER_CALL,
        ratio=t_ours / t_anchor,
        goal=1.0,
        direction="<=",
        notes=f"MLP 784-300-100-10, batch {_BATCH}, same masks (density 0.1), SGD momentum 0.9",
    )


_RIGL_WIDTHS = (3000, 2000, 1000)  # 784-3000-2000-1000-10: 10.36M weights


def _big_mlp() -> MLP:
    torch.manual_seed(0)
    return MLP((784,), 10, hidden=_RIGL_WIDTHS)


@PERF.register("mask_update_vs_rigl_torch")
def mask_update_vs_rigl_torch() -> BenchResult:
    """One RigL drop-and-grow update, ours ÷ rigl-torch's ``_rigl_step``; goal ≤ 1.0."""
    rigl_scheduler = import_rigl_scheduler()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 784, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    density, drop_fraction = 0.1, 0.3

    theirs = _big_mlp()
    their_opt = _sgd(theirs.parameters())
    scheduler = rigl_scheduler(
        theirs,
        their_opt,
        dense_allocation=density,
        T_end=10_000,
        delta=100,
        alpha=drop_fraction,
        sparsity_distribution="uniform",
        ignore_linear_layers=False,
    )
    scheduler.step = 99  # the next backward accumulates the dense gradient
    F.cross_entropy(theirs(x), y).backward()

    ours_model = _big_mlp()
    # rigl-torch's uniform mode keeps the first layer dense: mask the same three layers.
    params = dict(list(ours_model.prunable_parameters().items())[1:])
    scalpel = Scalpel(ours_model, "masked", density=density, params=params, seed=0)
    our_opt = _sgd(ours_model.parameters())
    scalpel.bind_optimizer(our_opt)
    with scalpel.dense_grads():
        F.cross_entropy(ours_model(x), y).backward()
    fraction = float(scheduler.cosine_annealing())

    def ours() -> None:
        with torch.no_grad():
            for name in scalpel.names:
                mask = scalpel.mask(name)
                weight = params[name]
                n_drop = int(scalpel.density(name) * scalpel.numel(name) * fraction)
                drop = topk_among(weight.abs(), mask, n_drop, largest=False)
                scalpel.prune(name, drop)
                grow = topk_among(scalpel.dense_grad(name).abs(), ~mask, n_drop)
                scalpel.regrow(name, grow, init="zero")

    t_ours, t_anchor = paired_median_times(ours, scheduler._rigl_step, repeats=9, warmup=2)
    n = sum(p.numel() for p in ours_model.prunable_parameters().values())
    return BenchResult(
        ours_s=t_ours,
        anchor="rigl-torch RigLScheduler._rigl_step (ignore_linear_layers=False)",
        anchor_s=t_anchor,
        ratio=t_ours / t_anchor,
        goal=1.0,
        direction="<=",
        notes=(
            f"MLP 784-{'-'.join(map(str, _RIGL_WIDTHS))}-10 ({n / 1e6:.2f}M weights), layers 1-3 "
            f"at density {density} (rigl-torch's uniform mode keeps layer 0 dense), drop "
            f"fraction {fraction:.3f}; ours = Scalpel.prune/regrow + topk_among, optimizer "
            "state reset included"
        ),
    )


@PERF.register("semi_structured_speedup")
def semi_structured_speedup() -> BenchResult:
    """Dense ÷ 2:4 semi-structured time of an 8192×8192 bf16 Linear at batch 4096; goal ≥ 1.3."""
    if not semi_structured_available():
        raise SkipBenchmark("needs CUDA compute capability ≥ 8.0 (2:4 sparse tensor cores)")
    dense = nn.Linear(8192, 8192, bias=False).to("cuda", torch.bfloat16).eval()
    with torch.no_grad():
        dense.weight.mul_(nm_mask(dense.weight.abs(), 2, 4))
    sparse = export_semi_structured(copy.deepcopy(dense))
    x = torch.randn(4096, 8192, device="cuda", dtype=torch.bfloat16)

    def timed(layer: nn.Linear) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for _ in range(10):
                    layer(x)
            torch.cuda.synchronize()

        return run

    t_sparse, t_dense = paired_median_times(timed(sparse), timed(dense), repeats=20, warmup=3)
    return BenchResult(
        ours_s=t_sparse / 10,
        anchor="dense bf16 Linear with the same (2:4-masked) weight",
        anchor_s=t_dense / 10,
        ratio=t_dense / t_sparse,
        goal=1.3,
        direction=">=",
        notes=f"{torch.cuda.get_device_name()}, 8192x8192 weight, batch 4096, bf16, inference",
    )
