"""Offline data sources for drifting streams.

Every source is made on this machine, never downloaded: scikit-learn's bundled 8×8 digits,
MNIST-1D produced by the ``mnist1d`` package's generator (Greydanus 2020; its download URL is
never touched), a Gaussian-mixture classification problem, and the slowly-changing regression
problem of Dohare et al. (Nature 2024, "Loss of plasticity in deep continual learning").

A source answers one question: "give me ``n`` examples of distribution ``d``, restricted to these
classes". Pool sources (digits, MNIST-1D, Gaussian mixture) hold a fixed set of examples and
ignore ``d``: drift primitives (:mod:`esper.workloads.drift`) make their distributions differ.
The slowly-changing regression problem drifts by itself: distribution ``d`` is the state of its
flip bits after ``d`` flips.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from esper.registry import Registry, build
from esper.seeding import generator

__all__ = [
    "SOURCES",
    "PoolSource",
    "SlowlyChangingRegression",
    "Source",
    "make_source",
]

TaskKind = Literal["classification", "regression", "q_learning"]


class Source(ABC):
    """Where a stream's examples come from.

    Attributes:
        name: Registry name of the source.
        input_shape: Shape of one example, channel-first for images (``(1, 8, 8)`` for digits).
        kind: ``"classification"`` (integer labels) or ``"regression"`` (float targets).
        num_outputs: Number of classes, or 1 for regression.
        intrinsic_drift: Name of the drift the source carries by itself, if any.
    """

    name: str
    input_shape: tuple[int, ...]
    kind: TaskKind
    num_outputs: int
    intrinsic_drift: str | None = None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` for 2-D image data (shape ``(C, H, W)``), else ``None``."""
        return (self.input_shape[1], self.input_shape[2]) if len(self.input_shape) == 3 else None

    @property
    def classes(self) -> tuple[int, ...]:
        """The class labels, empty for regression."""
        return tuple(range(self.num_outputs)) if self.kind == "classification" else ()

    @abstractmethod
    def sample(
        self,
        gen: torch.Generator,
        n: int,
        distribution: int,
        classes: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` examples ``(x, y)`` of distribution ``distribution``.

        Args:
            gen: The stream's generator; all randomness comes from it.
            n: Number of examples.
            distribution: Which distribution of the stream (used by drifting sources).
            classes: Restrict to these labels (class-incremental streams), or ``None`` for all.
        """


class PoolSource(Source):
    """A fixed pool of examples, sampled uniformly with replacement.

    Args:
        name: Registry name.
        x: Inputs, ``[N, *input_shape]``, float32.
        y: Integer labels ``[N]``.
        num_classes: Number of classes.
    """

    def __init__(self, name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{name}: {x.shape[0]} inputs but {y.shape[0]} labels")
        self.name = name
        self.x = x.float().contiguous()
        self.y = y.long().contiguous()
        self.input_shape = tuple(x.shape[1:])
        self.kind = "classification"
        self.num_outputs = num_classes
        self._by_class = {c: torch.nonzero(self.y == c).flatten() for c in range(num_classes)}
        self._pools: dict[tuple[int, ...], torch.Tensor] = {}

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def indices_for(self, classes: tuple[int, ...] | None) -> torch.Tensor:
        """Pool indices of the examples whose label is in ``classes`` (all when ``None``)."""
        if classes is None:
            return torch.arange(len(self))
        unknown = [c for c in classes if c not in self._by_class]
        if unknown:
            raise ValueError(
                f"{self.name}: classes {unknown} do not exist (0..{self.num_outputs - 1})"
            )
        return torch.cat([self._by_class[c] for c in classes])

    def sample(
        self,
        gen: torch.Generator,
        n: int,
        distribution: int,
        classes: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if classes is None:  # every example: the drawn positions are the indices
            idx = torch.randint(len(self), (n,), generator=gen)
        else:
            if (pool := self._pools.get(classes)) is None:
                pool = self._pools[classes] = self.indices_for(classes)
            idx = pool[torch.randint(len(pool), (n,), generator=gen)]
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


class SlowlyChangingRegression(Source):
    """The slowly-changing regression problem of Dohare et al. (Nature 2024).

    Inputs are ``num_bits`` binary values; the first ``num_flip_bits`` are *flip bits* that stay
    fixed within a distribution, and the rest are drawn uniformly for every example. Each new
    distribution flips one randomly chosen flip bit. The target is a fixed random network of
    ``num_hidden`` linear threshold units (LTUs) with ±1 weights: unit ``i`` fires when
    ``w_i · [x, 1] ≥ θ_i`` with ``θ_i = m·β − S_i``, where ``m`` is the input length (with the
    bias) and ``S_i`` counts the unit's negative weights; the output is ``Σ v_i·LTU_i`` with
    ``v_i ∈ {±1}``.

    Args:
        num_bits: Input length (20 in the paper).
        num_flip_bits: Slowly-changing bits (15).
        num_hidden: LTUs of the target network (100).
        beta: Threshold parameter β (0.7).
        seed: Fixes the target network, the initial flip bits and the flip sequence.
    """

    def __init__(
        self,
        num_bits: int = 20,
        num_flip_bits: int = 15,
        num_hidden: int = 100,
        beta: float = 0.7,
        seed: int = 0,
    ) -> None:
        if not 0 < num_flip_bits <= num_bits:
            raise ValueError(
                f"num_flip_bits must be in 1..num_bits={num_bits}, got {num_flip_bits}"
            )
        self.name = "slowly_changing_regression"
        self.input_shape = (num_bits,)
        self.kind = "regression"
        self.num_outputs = 1
        self.intrinsic_drift = "bit_flip"
        self.num_flip_bits = num_flip_bits
        self.seed = seed
        g = generator(seed, "scr", "target")
        m = num_bits + 1
        self.w = (torch.randint(2, (num_hidden, m), generator=g) * 2 - 1).float()
        self.v = (torch.randint(2, (num_hidden,), generator=g) * 2 - 1).float()
        negatives = (self.w < 0).sum(dim=1).float()
        self.theta = m * beta - negatives
        self._initial_bits = torch.randint(2, (num_flip_bits,), generator=g).float()
        self._flips: list[int] = []
        self._flip_gen = generator(seed, "scr", "flips")

    def flip_bits(self, distribution: int) -> torch.Tensor:
        """The flip-bit state of ``distribution`` (after ``distribution`` flips)."""
        while len(self._flips) < distribution:
            self._flips.append(
                int(torch.randint(self.num_flip_bits, (1,), generator=self._flip_gen))
            )
        bits = self._initial_bits.clone()
        for i in self._flips[:distribution]:
            bits[i] = 1.0 - bits[i]
        return bits

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The target network's output for inputs ``x`` ``[n, num_bits]``."""
        xb = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)
        ltu = (xb @ self.w.T >= self.theta).float()
        return ltu @ self.v

    def sample(
        self,
        gen: torch.Generator,
        n: int,
        distribution: int,
        classes: tuple[int, ...] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if classes is not None:
            raise ValueError("slowly_changing_regression has no classes to restrict")
        free = torch.randint(2, (n, self.input_shape[0] - self.num_flip_bits), generator=gen)
        x = torch.cat([self.flip_bits(distribution).expand(n, -1), free.float()], dim=1)
        return x, self.target(x)


SOURCES: Registry[Callable[..., Source]] = Registry("dataset")

_MNIST1D_POOLS = 4
"""MNIST-1D pools a process keeps (one of 60,000 samples is 9.6 MB)."""


@SOURCES.register("digits")
def digits() -> PoolSource:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    return PoolSource("digits", x, torch.from_numpy(data.target), 10)


@SOURCES.register("mnist1d")
def mnist1d(num_samples: int = 5000, seed: int = 42) -> PoolSource:
    """MNIST-1D (Greydanus 2020) generated locally: 40-sample signals, 10 classes.

    The generator scales to the field's dataset sizes (60,000 samples, as many as MNIST's
    training set) but takes seconds to do it (13–16 s for 60,000 on a busy 2-core machine), so
    each process generates a ``(num_samples, seed)`` pool once and every later source of it
    shares those tensors (nothing writes to a pool's examples); nothing is written to disk.
    """
    x, y = _mnist1d_pool(num_samples, seed)
    return PoolSource("mnist1d", x, y, 10)


@functools.lru_cache(maxsize=_MNIST1D_POOLS)
def _mnist1d_pool(num_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs ``[num_samples, 1, 40]`` and labels of MNIST-1D's generator, once per
    process. The generator reseeds NumPy's global state; it is restored afterwards."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    args.train_split = 1.0
    state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    x = torch.from_numpy(np.asarray(data["x"], dtype=np.float32)).unsqueeze(1)
    return x, torch.from_numpy(np.asarray(data["y"])).long()


@SOURCES.register("gaussian_mixture")
def gaussian_mixture(
    num_classes: int = 5,
    dim: int = 16,
    num_samples: int = 4000,
    separation: float = 2.5,
    seed: int = 0,
) -> PoolSource:
    """A Gaussian-mixture classification pool: one unit-variance component per class.

    Class means lie on a sphere of radius ``separation``; inputs are ``[N, dim]`` vectors.
    """
    g = generator(seed, "gaussian_mixture")
    means = torch.randn(num_classes, dim, generator=g)
    means = separation * means / means.norm(dim=1, keepdim=True)
    y = torch.arange(num_samples) % num_classes
    x = means[y] + torch.randn(num_samples, dim, generator=g)
    return PoolSource("gaussian_mixture", x, y, num_classes)


SOURCES.register("slowly_changing_regression")(SlowlyChangingRegression)


def make_source(name: str, **params: Any) -> Source:
    """Build a registered source, rejecting unknown parameters by name.

    Raises:
        esper.registry.UnknownNameError: ``name`` is not a registered dataset.
        InvalidParameterError: a parameter is not accepted by the source (the message names it).
    """
    return build(SOURCES[name], params, f"dataset {name!r}")
