"""Which samples a replay buffer keeps: selection rules from a registry.

A rule sees the candidates of a refresh (the buffer's members up for refresh and the samples
the stream showed since the last one) through :class:`Candidates` and returns the ``k`` to
keep. Samples the caller *forces* (tail samples locked by synchronized retention,
:mod:`esper.workloads.memory.retention`) are always kept and count towards ``k``; a rule
chooses the rest. Every rule is deterministic given the candidates (randomness enters only
through each sample's ``key``, drawn once when it arrives).

Rules:

* ``reservoir``: a uniform sample of everything seen. Each sample gets a uniform random key
  on arrival and the ``k`` largest keys are kept, which is reservoir sampling with random
  keys (Efraimidis & Spirakis 2006, "Weighted random sampling with a reservoir", with equal
  weights; Vitter 1985 for reservoir sampling).
* ``class_balanced``: as many samples of each class as possible (greedy: the next slot goes
  to the class holding the fewest so far; within a class, by key), the rule of GDumb
  (Prabhu et al. 2020, ECCV).
* ``forgetting``: the samples forgotten most often (a *forgetting event* is a sample the
  network classified correctly at one presentation and wrongly at the next; Toneva et al.
  2019, "An empirical study of example forgetting during deep neural network learning",
  ICLR), ties broken by the smallest margin (hardest first), then by key.
* ``gradient``: a coreset whose gradients cover everyone's, by greedy facility location on
  last-layer gradient embeddings ``softmax(z) − onehot(y)`` (CRAIG, Mirzasoleiman et al.
  2020, "Coresets for data-efficient training of machine learning models", ICML): maximise
  ``Σ_i max_{j∈S} (d_max − ‖e_i − e_j‖)`` over the kept set ``S``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from esper.registry import Registry, build

__all__ = ["SELECTIONS", "Candidates", "Selection", "make_selection"]


@dataclass(frozen=True)
class Candidates:
    """What a selection rule may read about each candidate sample (one row each).

    Attributes:
        y: Labels, long ``[n]``.
        key: Uniform random priority drawn when the sample arrived, ``[n]``.
        forgets: Forgetting events counted so far, ``[n]``.
        margin: Latest margin (correct-class logit minus the best other), ``[n]``.
        embedding: Gradient embeddings ``[n, d]`` (only for rules with ``needs_embedding``).
    """

    y: Tensor
    key: Tensor
    forgets: Tensor
    margin: Tensor
    embedding: Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


class Selection(ABC):
    """A rule choosing which candidates a buffer keeps."""

    name: ClassVar[str]
    needs_embedding: ClassVar[bool] = False

    def select(self, c: Candidates, k: int, forced: Tensor | None = None) -> Tensor:
        """Sorted indices of the ``k`` candidates to keep (all of them if there are fewer).

        Args:
            c: The candidates.
            k: How many to keep.
            forced: Boolean ``[n]``: candidates kept whatever the rule says (counted in ``k``).

        Raises:
            ValueError: ``k`` negative, more forced candidates than ``k``, or a rule that
                needs embeddings given none.
        """
        n = len(c)
        if k < 0:
            raise ValueError(f"a buffer keeps k ≥ 0 samples, got k={k}")
        forced = torch.zeros(n, dtype=torch.bool) if forced is None else forced.bool()
        if int(forced.sum()) > k:
            raise ValueError(f"{int(forced.sum())} forced samples do not fit in k={k}")
        if k >= n:
            return torch.arange(n)
        if self.needs_embedding and c.embedding is None:
            raise ValueError(f"selection {self.name!r} needs gradient embeddings")
        free = k - int(forced.sum())
        chosen = self._choose(c, free, forced) if free > 0 else torch.empty(0, dtype=torch.long)
        return torch.cat([forced.nonzero().view(-1), chosen]).sort().values

    @abstractmethod
    def _choose(self, c: Candidates, k: int, forced: Tensor) -> Tensor:
        """Indices of ``k`` candidates among those not forced (``1 ≤ k < unforced``)."""


SELECTIONS: Registry[type[Selection]] = Registry("selection")


def _by_key(c: Candidates, allowed: Tensor) -> Tensor:
    """Allowed indices by decreasing key."""
    idx = allowed.nonzero().view(-1)
    return idx[torch.argsort(c.key[idx], descending=True, stable=True)]


@SELECTIONS.register("reservoir")
class Reservoir(Selection):
    """A uniform sample of every sample seen: the largest arrival keys."""

    name = "reservoir"

    def _choose(self, c: Candidates, k: int, forced: Tensor) -> Tensor:
        return _by_key(c, ~forced)[:k]


@SELECTIONS.register("class_balanced")
class ClassBalanced(Selection):
    """Equal shares per class: each slot to the class holding the fewest (smallest label on
    ties), within a class by arrival key."""

    name = "class_balanced"

    def _choose(self, c: Candidates, k: int, forced: Tensor) -> Tensor:
        queues = {
            int(label): _by_key(c, ~forced & (c.y == label)).tolist()
            for label in c.y[~forced].unique()
        }
        held = {label: int((c.y[forced] == label).sum()) for label in queues}
        out: list[int] = []
        while len(out) < k:
            label = min((lb for lb in queues if queues[lb]), key=lambda lb: (held[lb], lb))
            out.append(queues[label].pop(0))
            held[label] += 1
        return torch.tensor(out, dtype=torch.long)


@SELECTIONS.register("forgetting")
class Forgetting(Selection):
    """Most forgetting events first (Toneva et al. 2019), then smallest margin, then key."""

    name = "forgetting"

    def _choose(self, c: Candidates, k: int, forced: Tensor) -> Tensor:
        idx = _by_key(c, ~forced)  # the last tie-breaker first: stable sorts keep it
        margin = torch.nan_to_num(c.margin[idx].float(), nan=float("inf"))
        idx = idx[torch.argsort(margin, stable=True)]
        idx = idx[torch.argsort(c.forgets[idx], descending=True, stable=True)]
        return idx[:k]


@SELECTIONS.register("gradient")
class GradientCoreset(Selection):
    """Greedy facility location on gradient embeddings (CRAIG): the forced samples cover
    first, then each pick adds the most coverage of every candidate's gradient."""

    name = "gradient"
    needs_embedding = True

    def _choose(self, c: Candidates, k: int, forced: Tensor) -> Tensor:
        assert c.embedding is not None
        dist = torch.cdist(c.embedding.double(), c.embedding.double())
        sim = dist.max() - dist  # similarity ≥ 0; a sample covers itself best
        cover = sim[:, forced].amax(dim=1) if bool(forced.any()) else torch.zeros(len(c))
        cover = cover.double()
        allowed = ~forced
        out: list[int] = []
        for _ in range(k):
            gain = (sim - cover[:, None]).clamp(min=0).sum(dim=0)
            gain[~allowed] = -1.0
            best = int(torch.argmax(gain))  # the smallest index among equal gains
            out.append(best)
            allowed[best] = False
            cover = torch.maximum(cover, sim[:, best])
        return torch.tensor(out, dtype=torch.long)


def make_selection(name: str) -> Selection:
    """The registered selection rule ``name`` (an unknown name lists the valid ones)."""
    return build(SELECTIONS[name], {}, f"selection {name!r}")
