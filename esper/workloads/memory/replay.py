"""The organism's data side: a replay buffer whose size is a budget, like density.

A :class:`Memory` holds at most ``capacity`` past samples. At every training step it mixes
``replay_ratio × batch_size`` of them, drawn uniformly, into the stream's batch (the stream's
rows first: the online score reads only those) and watches what the network makes of both:
a replayed sample classified correctly before and wrongly now counts a *forgetting event*
(Toneva et al. 2019), and the stream's samples are staged as candidates with a random key and
their margin. At each surgery the buffer is *refreshed*: a fraction of its members, drawn at
random, and the staged candidates compete for those members' slots (and any free ones) under a
selection rule of :data:`~esper.workloads.memory.selection.SELECTIONS`; samples that
synchronized retention locks are kept whatever the rule says. How much to refresh and with
which rule is the data side's action (:class:`DataAction`).

Only classification streams have a data side (the rules read labels and margins).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from esper.seeding import derive_seed
from esper.workloads.memory.selection import SELECTIONS, Candidates, make_selection
from esper.workloads.sensors.gradients import margins
from esper.workloads.stream import Batch

__all__ = ["DataAction", "Memory", "Refresh"]

_FIELDS = ("x", "y", "key", "forgets", "margin", "correct")


@dataclass(frozen=True)
class DataAction:
    """The data side's action at a surgery.

    Attributes:
        refresh: Fraction of the buffer's members up for replacement, in ``[0, 1]``.
        strategy: Selection rule of the refresh (``None``: the memory's own).
    """

    refresh: float = 1.0
    strategy: str | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming a refresh outside ``[0, 1]`` or an unknown rule."""
        if not 0.0 <= self.refresh <= 1.0:
            raise ValueError(f"data action refresh must be in [0, 1], got {self.refresh}")
        if self.strategy is not None:
            SELECTIONS[self.strategy]


@dataclass(frozen=True)
class Refresh:
    """What one refresh did, per class label: samples ``added`` from the stream, members
    ``evicted``, and members ``locked`` (kept because retention held them)."""

    added: dict[int, int]
    evicted: dict[int, int]
    locked: dict[int, int]


def _empty(capacity: int, input_shape: tuple[int, ...], device: torch.device) -> dict[str, Tensor]:
    return {
        "x": torch.zeros((capacity, *input_shape), device=device),
        "y": torch.zeros(capacity, dtype=torch.long, device=device),
        "key": torch.zeros(capacity, device=device),
        "forgets": torch.zeros(capacity, dtype=torch.long, device=device),
        "margin": torch.full((capacity,), math.nan, device=device),
        "correct": torch.zeros(capacity, dtype=torch.bool, device=device),
    }


def _counts(y: Tensor) -> dict[int, int]:
    labels, counts = torch.unique(y, return_counts=True)
    return {int(a): int(b) for a, b in zip(labels.tolist(), counts.tolist(), strict=True)}


class Memory:
    """A replay buffer of at most ``capacity`` samples, refreshed at each surgery.

    Args:
        capacity: Most samples held (the data budget), ≥ 1.
        input_shape: Shape of one sample.
        num_classes: Number of classes of the stream.
        strategy: Default selection rule (:data:`SELECTIONS`).
        replay_ratio: Replayed samples per stream sample in each training batch, ≥ 0.
        refresh: Default fraction of members up for replacement at each refresh.
        seed: Seeds the keys, the replay draws and the members up for refresh.
        device: Where the buffer lives (the host's device).
    """

    def __init__(
        self,
        capacity: int,
        input_shape: tuple[int, ...],
        num_classes: int,
        strategy: str = "reservoir",
        replay_ratio: float = 1.0,
        refresh: float = 1.0,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"memory capacity must be ≥ 1, got {capacity}")
        if replay_ratio < 0:
            raise ValueError(f"memory replay_ratio must be ≥ 0, got {replay_ratio}")
        self.default = DataAction(refresh, strategy)
        self.default.validate()
        self.capacity = capacity
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.replay_ratio = replay_ratio
        self.device = torch.device(device)
        self.size = 0
        self.buf = _empty(capacity, self.input_shape, self.device)
        self._staged: list[dict[str, Tensor]] = []  # the window's candidates, joined lazily
        self._staged_rows = 0
        self.seen = torch.zeros(num_classes, dtype=torch.long, device=self.device)
        self._gen = torch.Generator()
        self._gen.manual_seed(derive_seed(seed, "memory"))
        self._slots = torch.empty(0, dtype=torch.long)
        self._fresh = 0

    def __len__(self) -> int:
        return self.size

    def members(self, label: int | None = None) -> tuple[Tensor, Tensor]:
        """The buffer's samples ``(x, y)`` (of class ``label`` only, if given)."""
        x, y = self.buf["x"][: self.size], self.buf["y"][: self.size]
        if label is None:
            return x, y
        keep = y == label
        return x[keep], y[keep]

    # -- every training step -----------------------------------------------------------------

    def mix(self, batch: Batch) -> Batch:
        """``batch`` with replayed samples appended (the stream's rows first)."""
        self._fresh = batch.x.shape[0]
        m = round(self.replay_ratio * self._fresh) if self.size else 0
        if m == 0:
            self._slots = torch.empty(0, dtype=torch.long)
            return batch
        if m <= self.size:
            self._slots = torch.randperm(self.size, generator=self._gen)[:m]
        else:
            self._slots = torch.randint(self.size, (m,), generator=self._gen)
        slots = self._slots.to(self.device)
        x = torch.cat([batch.x, self.buf["x"][slots]])
        return replace(batch, x=x, y=torch.cat([batch.y, self.buf["y"][slots]]))

    @torch.no_grad()
    def observe(self, mixed: Batch, out: Tensor) -> Tensor:
        """Read the outputs (before the update) of the batch :meth:`mix` made: count the
        replayed samples' forgetting events, stage the stream's samples as candidates.
        Returns the stream rows' outputs (the ones scored online)."""
        n = self._fresh
        out = out.detach()
        margin = margins(out, mixed.y)
        correct = out.argmax(dim=1) == mixed.y
        if self._slots.numel():
            slots = self._slots.to(self.device)
            forgot = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
            forgot[slots] = self.buf["correct"][slots] & ~correct[n:]
            self.buf["forgets"] += forgot.long()
            self.buf["margin"][slots] = margin[n:].float()
            self.buf["correct"][slots] = correct[n:]
        y = mixed.y[:n]
        self.seen += torch.bincount(y, minlength=self.num_classes)[: self.num_classes]
        self._staged.append({
            "x": mixed.x[:n],
            "y": y,
            "key": torch.rand(n, generator=self._gen).to(self.device),
            "forgets": torch.zeros(n, dtype=torch.long, device=self.device),
            "margin": margin[:n].float(),
            "correct": correct[:n],
        })  # fmt: skip
        self._staged_rows += n
        if self._staged_rows > 2 * self.capacity:  # only the top keys can win a slot
            self._candidates(trim=True)
        return out[:n]

    def _candidates(self, trim: bool = False) -> dict[str, Tensor]:
        """The staged candidates as one table (at most ``capacity`` rows, by key, if
        ``trim``: a uniform sample of the window, the ones a reservoir could keep)."""
        staged = (
            {f: torch.cat([part[f] for part in self._staged]) for f in _FIELDS}
            if self._staged
            else _empty(0, self.input_shape, self.device)
        )
        if trim and staged["y"].shape[0] > self.capacity:
            top = torch.topk(staged["key"], self.capacity).indices.sort().values
            staged = {f: staged[f][top] for f in _FIELDS}
        self._staged, self._staged_rows = [staged], int(staged["y"].shape[0])
        return staged

    # -- at each surgery -----------------------------------------------------------------------

    def refresh(
        self,
        action: DataAction | None = None,
        locked: Tensor | None = None,
        embed: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Refresh:
        """Let the staged candidates compete for the slots of a fraction of the members.

        Args:
            action: How much to refresh and with which rule (default: the memory's own).
            locked: Boolean ``[len(self)]``: members kept whatever the rule says.
            embed: ``embed(x, y) → [n, d]`` gradient embeddings, for rules that need them.
        """
        action = action or self.default
        action.validate()
        rule = make_selection(action.strategy or self.default.strategy or "reservoir")
        staged = self._candidates(trim=True)
        n_up = min(self.size, math.ceil(action.refresh * self.size))
        up = torch.randperm(self.size, generator=self._gen)[:n_up].sort().values.to(self.device)
        stay = torch.ones(self.size, dtype=torch.bool, device=self.device)
        stay[up] = False
        pool = {f: torch.cat([self.buf[f][: self.size][up], staged[f]]) for f in _FIELDS}
        forced = torch.zeros(pool["y"].shape[0], dtype=torch.bool)
        lock = torch.zeros(self.size, dtype=torch.bool) if locked is None else locked.cpu()
        forced[:n_up] = lock[up.cpu()]
        k = n_up + (self.capacity - self.size)
        embedding = None
        if rule.needs_embedding and k < pool["y"].shape[0]:  # a real competition
            if embed is None:
                raise ValueError(f"selection {rule.name!r} needs an embed function")
            embedding = embed(pool["x"], pool["y"]).cpu()
        candidates = Candidates(
            y=pool["y"].cpu(),
            key=pool["key"].cpu(),
            forgets=pool["forgets"].cpu(),
            margin=pool["margin"].cpu(),
            embedding=embedding,
        )
        chosen = rule.select(candidates, k, forced).to(self.device)
        kept_members = chosen[chosen < n_up]
        added = chosen[chosen >= n_up]
        evicted = torch.ones(n_up, dtype=torch.bool, device=self.device)
        evicted[kept_members] = False
        report = Refresh(
            added=_counts(pool["y"][added]),
            evicted=_counts(pool["y"][:n_up][evicted]),
            locked=_counts(self.buf["y"][: self.size][lock.to(self.device)]),
        )
        keep = {f: torch.cat([self.buf[f][: self.size][stay], pool[f][chosen]]) for f in _FIELDS}
        self.size = int(keep["y"].shape[0])
        for f in _FIELDS:
            self.buf[f][: self.size] = keep[f]
        self._staged, self._staged_rows = [], 0
        return report

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The members, the staged candidates, the class counts and the generator."""
        return {
            "size": self.size,
            "buffer": {f: self.buf[f][: self.size].clone() for f in _FIELDS},
            "staged": {f: t.clone() for f, t in self._candidates().items()},
            "seen": self.seen.cpu(),
            "generator": self._gen.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a memory built the same way."""
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"saved memory holds {size} samples, capacity is {self.capacity}")
        self.size = size
        self.buf = _empty(self.capacity, self.input_shape, self.device)
        for f in _FIELDS:
            self.buf[f][:size] = state["buffer"][f].to(self.device)
        staged = {f: state["staged"][f].to(self.device) for f in _FIELDS}
        self._staged, self._staged_rows = [staged], int(staged["y"].shape[0])
        self.seen = state["seen"].to(self.device)
        self._gen.set_state(state["generator"])
