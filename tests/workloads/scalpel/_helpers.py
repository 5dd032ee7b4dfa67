"""Tiny hosts and probes shared by the Scalpel tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from esper.workloads.hosts import CNN, MLP, Host, TinyTransformer
from esper.workloads.scalpel import Scalpel

HOSTS: dict[str, tuple[Callable[[], Host], tuple[int, ...]]] = {
    "mlp": (lambda: MLP((64,), 10, hidden=(32, 16)), (64,)),
    "cnn": (lambda: CNN((1, 8, 8), 10, channels=(4, 8), hidden=16), (1, 8, 8)),
    "transformer": (
        lambda: TinyTransformer((64,), 10, d_model=16, heads=4, layers=1, ff=32),
        (64,),
    ),
}


def make(
    mechanism: str,
    host: str = "mlp",
    density: float | None = 0.5,
    seed: int = 0,
    model_seed: int = 0,
    **kwargs: Any,
) -> tuple[Host, Scalpel, tuple[int, ...]]:
    """A tiny host with a Scalpel (``nm`` ignores ``density``)."""
    factory, shape = HOSTS[host]
    torch.manual_seed(model_seed)
    model = factory()
    scalpel = Scalpel(
        model, mechanism, density=None if mechanism == "nm" else density, seed=seed, **kwargs
    )
    return model, scalpel, shape


def batch(shape: tuple[int, ...], seed: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, 10, (n,), generator=gen)


class _WeightRecorder(TorchFunctionMode):
    """Records the weight argument of every F.linear / F.conv call, by the calling module."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self.weights: dict[str, list[torch.Tensor]] = {}

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in (F.linear, F.conv1d, F.conv2d) and self.current is not None:
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            self.weights.setdefault(self.current, []).append(weight.detach().clone())
        return func(*args, **kwargs)


@contextlib.contextmanager
def forward_weights(model: nn.Module, names: list[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Inside the block, collect the weights each masked module really multiplies by."""
    recorder = _WeightRecorder()
    handles = []
    for name in names:
        module = model.get_submodule(name.rpartition(".")[0])

        def pre(_m: nn.Module, _a: Any, name: str = name) -> None:
            recorder.current = name

        handles.append(module.register_forward_pre_hook(pre))
    try:
        with recorder:
            yield recorder.weights
    finally:
        for h in handles:
            h.remove()


def cut_and_grow(scalpel: Scalpel, step: int) -> None:
    """A small deterministic surgery on every layer: prune 3 kept weights, regrow 2 of them.

    Regrowing just-pruned positions keeps N:M patterns valid.
    """
    for name in scalpel.names:
        kept = scalpel.mask(name).view(-1).nonzero().view(-1)
        cut = kept[step : step + 3].clone()
        assert scalpel.prune(name, cut) == cut.numel()
        assert scalpel.regrow(name, cut[:2], init="kaiming") == min(2, cut.numel())
