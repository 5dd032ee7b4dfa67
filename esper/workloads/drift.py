"""Drift primitives: the ways a stream's distribution can change.

A primitive turns a distribution index ``d`` (which task of the stream we are in) into a change of
the data: a permutation of inputs, a rotation, a subset of classes, a relabelling, a covariate
shift, or noise. Primitives compose: a stream applies each of its primitives in order, and its
schedule (:mod:`esper.workloads.schedules`) decides which distribution is active when.

Everything a primitive draws for distribution ``d`` comes from a generator seeded by
``(seed, primitive name, position, d)`` only, so the same ``d`` always means exactly the same
distribution: a recurring schedule A→B→A really returns to A.

Primitives follow Dohare et al. (Nature 2024) for permuted inputs and class-incremental splits,
and the usual continual-learning benchmarks (rotated MNIST, label permutation, covariate shift).
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F

from esper.registry import Registry, build
from esper.seeding import generator
from esper.workloads.datasets import Source

__all__ = [
    "DRIFTS",
    "Affine",
    "ClassIncremental",
    "CovariateShift",
    "Drift",
    "NoiseBurst",
    "PermuteInputs",
    "PermuteLabels",
    "Rotate",
    "make_drift",
]

T = TypeVar("T")


class Drift(ABC):
    """One drift primitive; subclasses override the hooks they need.

    A primitive is bound to a source and a seed by :meth:`bind` before use (the stream does
    this), which also checks that the primitive applies to the source.
    """

    name: ClassVar[str]
    needs_images: ClassVar[bool] = False
    needs_classes: ClassVar[bool] = False

    def __init__(self) -> None:
        self._source: Source | None = None
        self._seed = 0
        self._slot = 0
        self._cache: dict[Any, Any] = {}

    def bind(self, source: Source, seed: int, slot: int = 0) -> None:
        """Attach to ``source``; ``slot`` is the primitive's position in its stream."""
        if self.needs_images and source.image_shape is None:
            raise ValueError(
                f"drift {self.name!r} needs 2-D image data (C, H, W); dataset {source.name!r} "
                f"has input shape {source.input_shape}"
            )
        if self.needs_classes and source.kind != "classification":
            raise ValueError(
                f"drift {self.name!r} needs a classification dataset, not {source.name!r}"
            )
        self._source = source
        self._seed = seed
        self._slot = slot
        self._cache.clear()

    @property
    def source(self) -> Source:
        if self._source is None:
            raise RuntimeError(f"drift {self.name!r} is not bound to a source; call bind() first")
        return self._source

    def _gen(self, distribution: int) -> torch.Generator:
        return generator(self._seed, "drift", self.name, self._slot, distribution)

    def _cached(self, key: Any, make: Callable[[], T]) -> T:
        """Memoise a per-distribution quantity (cleared when the primitive is re-bound)."""
        if key not in self._cache:
            self._cache[key] = make()
        value: T = self._cache[key]
        return value

    def classes(self, distribution: int) -> tuple[int, ...] | None:
        """Labels that distribution ``distribution`` draws from (``None``: no restriction)."""
        return None

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, distribution: int, step: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform a batch drawn for ``distribution`` at stream step ``step``."""
        return x, y


DRIFTS: Registry[type[Drift]] = Registry("drift")


@DRIFTS.register("permute_inputs")
class PermuteInputs(Drift):
    """A fixed random permutation of input features per distribution (permuted MNIST).

    Args:
        first_identity: Distribution 0 is the unpermuted data.
    """

    name = "permute_inputs"

    def __init__(self, first_identity: bool = True) -> None:
        super().__init__()
        self.first_identity = first_identity

    def permutation(self, distribution: int) -> torch.Tensor:
        """The feature permutation of distribution ``distribution``."""
        n = math.prod(self.source.input_shape)
        if distribution == 0 and self.first_identity:
            return torch.arange(n)
        return self._cached(
            distribution, lambda: torch.randperm(n, generator=self._gen(distribution))
        )

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, distribution: int, step: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        perm = self.permutation(distribution)
        return x.flatten(1).index_select(1, perm).reshape(x.shape), y


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply a 2×3 affine matrix to images ``[n, C, H, W]`` (bilinear, zero padding); an
    empty batch (a gradual schedule's sub-batch of one distribution) comes back as it is."""
    if x.shape[0] == 0:
        return x
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _affine_matrix(
    degrees: float, scale: float, shear: float, tx: float, ty: float
) -> torch.Tensor:
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shr = torch.tensor([[1.0, math.tan(math.radians(shear))], [0.0, 1.0]])
    lin = rot @ shr / scale
    return torch.cat([lin, torch.tensor([[tx], [ty]])], dim=1).float()


_IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@DRIFTS.register("rotate")
class Rotate(Drift):
    """Rotated images: distribution ``d`` is rotated by ``d · degrees_per_task`` degrees.

    Args:
        degrees_per_task: Rotation added with each new distribution.
    """

    name = "rotate"
    needs_images = True

    def __init__(self, degrees_per_task: float = 30.0) -> None:
        super().__init__()
        self.degrees_per_task = degrees_per_task

    def matrix(self, distribution: int) -> torch.Tensor:
        return _affine_matrix(distribution * self.degrees_per_task, 1.0, 0.0, 0.0, 0.0)

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, distribution: int, step: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.matrix(distribution)
        if torch.equal(theta, _IDENTITY):
            return x, y
        return _warp(x, theta), y


@DRIFTS.register("affine")
class Affine(Rotate):
    """A random affine transform of images per distribution (distribution 0 unchanged).

    Args:
        max_degrees: Rotation drawn uniformly in ``[-max_degrees, max_degrees]``.
        max_translate: Translation per axis, as a fraction of the half-width.
        max_log_scale: ``log(scale)`` drawn uniformly in ``[-max_log_scale, max_log_scale]``.
        max_shear: Shear angle in degrees, uniformly in ``[-max_shear, max_shear]``.
    """

    name = "affine"

    def __init__(
        self,
        max_degrees: float = 30.0,
        max_translate: float = 0.15,
        max_log_scale: float = 0.15,
        max_shear: float = 10.0,
    ) -> None:
        super().__init__()
        self.bounds = (max_degrees, max_log_scale, max_shear, max_translate, max_translate)

    def matrix(self, distribution: int) -> torch.Tensor:
        if distribution == 0:
            return _IDENTITY
        u = torch.rand(5, generator=self._gen(distribution)) * 2 - 1
        deg, log_s, shear, tx, ty = (float(b * v) for b, v in zip(self.bounds, u, strict=True))
        return _affine_matrix(deg, math.exp(log_s), shear, tx, ty)


@DRIFTS.register("class_incremental")
class ClassIncremental(Drift):
    """Class-incremental splits: distribution ``d`` draws only from the ``d``-th group of classes.

    Labels keep their original values (one shared output head, the class-IL setting). After the
    last group the splits start again from the first.

    Args:
        classes_per_task: Size of each group.
        shuffle: Shuffle the class order (seeded) before splitting.
    """

    name = "class_incremental"
    needs_classes = True

    def __init__(self, classes_per_task: int = 2, shuffle: bool = False) -> None:
        super().__init__()
        if classes_per_task < 1:
            raise ValueError(f"classes_per_task must be ≥ 1, got {classes_per_task}")
        self.classes_per_task = classes_per_task
        self.shuffle = shuffle

    def groups(self) -> list[tuple[int, ...]]:
        """The class groups, in task order."""
        order = list(self.source.classes)
        if self.classes_per_task > len(order):
            raise ValueError(
                f"classes_per_task={self.classes_per_task} exceeds the {len(order)} classes "
                f"of {self.source.name!r}"
            )
        if self.shuffle:
            perm = torch.randperm(len(order), generator=self._gen(-1)).tolist()
            order = [order[i] for i in perm]
        k = self.classes_per_task
        return [tuple(order[i : i + k]) for i in range(0, len(order) - k + 1, k)]

    def classes(self, distribution: int) -> tuple[int, ...] | None:
        groups: list[tuple[int, ...]] = self._cached("groups", self.groups)
        return groups[distribution % len(groups)]


@DRIFTS.register("permute_labels")
class PermuteLabels(Drift):
    """A fixed random relabelling per distribution (the inputs keep their meaning, labels move).

    Args:
        first_identity: Distribution 0 keeps the true labels.
    """

    name = "permute_labels"
    needs_classes = True

    def __init__(self, first_identity: bool = True) -> None:
        super().__init__()
        self.first_identity = first_identity

    def mapping(self, distribution: int) -> torch.Tensor:
        n = self.source.num_outputs
        if distribution == 0 and self.first_identity:
            return torch.arange(n)
        return torch.randperm(n, generator=self._gen(distribution))

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, distribution: int, step: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.mapping(distribution)[y]


@DRIFTS.register("covariate_shift")
class CovariateShift(Drift):
    """Covariate shift ``x' = s_d · x + μ_d``: a per-feature offset and a global scale per task.

    Args:
        shift: Standard deviation of the per-feature offsets ``μ_d``.
        max_log_scale: ``log s_d`` drawn uniformly in ``[-max_log_scale, max_log_scale]``.
        first_identity: Distribution 0 is unshifted.
    """

    name = "covariate_shift"

    def __init__(
        self, shift: float = 1.0, max_log_scale: float = 0.5, first_identity: bool = True
    ) -> None:
        super().__init__()
        self.shift = shift
        self.max_log_scale = max_log_scale
        self.first_identity = first_identity

    def parameters_for(self, distribution: int) -> tuple[float, torch.Tensor]:
        """``(scale, offset)`` of distribution ``distribution``."""
        shape = self.source.input_shape
        if distribution == 0 and self.first_identity:
            return 1.0, torch.zeros(shape)

        def draw() -> tuple[float, torch.Tensor]:
            g = self._gen(distribution)
            log_s = (float(torch.rand(1, generator=g)) * 2 - 1) * self.max_log_scale
            return math.exp(log_s), torch.randn(shape, generator=g) * self.shift

        return self._cached(distribution, draw)

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, distribution: int, step: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scale, offset = self.parameters_for(distribution)
        return x * scale + offset, y


@DRIFTS.register("noise_burst")
class NoiseBurst(Drift):
    """Bursts of additive Gaussian input noise: ``length`` steps out of every ``period``.

    The bursts follow stream time, not tasks: steps with ``(step - phase) mod period < length``
    (and ``step ≥ phase``) are noisy.

    Args:
        sigma: Noise standard deviation.
        period: Steps between burst starts.
        length: Steps each burst lasts.
        phase: Step of the first burst.
    """

    name = "noise_burst"

    def __init__(
        self, sigma: float = 0.5, period: int = 200, length: int = 20, phase: int = 100
    ) -> None:
        super().__init__()
        if not 0 < length <= period:
            raise ValueError(
                f"noise_burst needs 0 < length ≤ period, got length={length}, period={period}"
            )
        self.sigma = sigma
        self.period = period
        self.length = length
        self.phase = phase

    def active(self, step: int) -> bool:
        """Whether stream step ``step`` lies inside a burst."""
        return step >= self.phase and (step - self.phase) % self.period < self.length

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, distribution: int, step: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active(step):
            return x, y
        return x + self.sigma * torch.randn(x.shape, generator=gen), y


def make_drift(name: str, **params: Any) -> Drift:
    """Build a registered drift primitive, rejecting unknown parameters by name."""
    return build(DRIFTS[name], params, f"drift {name!r}")
