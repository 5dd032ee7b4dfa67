"""Drifting streams: a source, drift primitives and a schedule, played step by step.

A :class:`DriftStream` is deterministic given its seed: the same seed yields bit-identical
batches, and :meth:`DriftStream.state_dict` captures everything needed to continue exactly
where it stopped. Each batch reports its ``task_index``, the ``drift`` acting on it, and a
ground-truth ``novelty`` signal meant for analysis only (policies must not observe it).

Novelty is ``Σ_d w_d · exp(-e_d / τ)`` over the distributions ``d`` in the batch's blend, with
weights ``w_d`` and exposures ``e_d`` (steps of distribution ``d`` seen so far), and
``τ = novelty_timescale``. A never-seen distribution has novelty 1; it decays as the stream
dwells on it, and a recurring distribution returns with the low novelty it had when it left.

Example:
    >>> from esper.workloads import DriftStream, PermuteInputs, Recurring, make_source
    >>> stream = DriftStream(make_source("digits"), [PermuteInputs()],
    ...                      Recurring(task_length=100, pattern=(0, 1)), batch_size=32, seed=0)
    >>> batch = stream.next_batch()
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import torch

from esper.seeding import derive_seed
from esper.workloads.datasets import Source
from esper.workloads.drift import Drift
from esper.workloads.schedules import Phase, Schedule

__all__ = ["Batch", "DriftStream"]


@dataclass(frozen=True)
class Batch:
    """One step of a stream.

    Attributes:
        x: Inputs ``[batch, *input_shape]``.
        y: Labels (long) or regression targets (float), ``[batch]``.
        step: Stream step, from 0.
        task_index: Nominal task, ``step // task_length``.
        distribution: The dominant distribution of this batch.
        drift: Name of the drift acting on the stream (e.g. ``"permute_inputs"``).
        novelty: Ground-truth novelty in ``[0, 1]``, for analysis only.
        incoming_fraction: Fraction of examples drawn from the incoming distribution.
        score: The batch's online score when the stream measures it itself (an agent's
            normalised return, :mod:`esper.workloads.rl.agent`); ``nan`` otherwise.
    """

    x: torch.Tensor
    y: torch.Tensor
    step: int
    task_index: int
    distribution: int
    drift: str
    novelty: float
    incoming_fraction: float
    score: float = math.nan

    def state_dict(self) -> dict[str, Any]:
        """The batch as plain data (tensors, numbers, the drift name)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str) -> Batch:
        """The batch with ``x`` and ``y`` on ``device`` (the batch itself if already there)."""
        device = torch.device(device)
        if self.x.device == device and self.y.device == device:
            return self
        return replace(self, x=self.x.to(device), y=self.y.to(device))


class DriftStream:
    """A reproducible non-stationary stream of batches.

    Args:
        source: Where examples come from.
        drifts: Primitives applied in order to every batch (may be empty for a source that
            drifts by itself, such as the slowly-changing regression problem).
        schedule: Which distribution each task shows, and how tasks hand over.
        batch_size: Examples per step.
        seed: Seeds the sampling and every primitive.
        num_tasks: Length of the stream in tasks (``len(stream) = num_tasks · task_length``).
        novelty_timescale: τ of the novelty signal in steps; defaults to ``task_length / 4``.
    """

    acts_with_host: ClassVar[bool] = False
    """Whether batches depend on the host being trained (an agent's do:
    :attr:`AgentStream.acts_with_host <esper.workloads.rl.agent.AgentStream.acts_with_host>`)."""

    def __init__(
        self,
        source: Source,
        drifts: Sequence[Drift],
        schedule: Schedule,
        batch_size: int,
        seed: int,
        num_tasks: int = 5,
        novelty_timescale: float | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be ≥ 1, got {num_tasks}")
        if not drifts and source.intrinsic_drift is None:
            raise ValueError(
                f"dataset {source.name!r} does not drift by itself: give at least one drift"
            )
        self.source = source
        self.drifts = list(drifts)
        for slot, drift in enumerate(self.drifts):
            drift.bind(source, seed, slot)
        self.schedule = schedule
        self.batch_size = batch_size
        self.seed = seed
        self.num_tasks = num_tasks
        self.novelty_timescale = novelty_timescale or schedule.task_length / 4
        names = [d.name for d in self.drifts]
        if source.intrinsic_drift:
            names.insert(0, source.intrinsic_drift)
        self.drift_name = "+".join(names)
        self._gen = torch.Generator()
        self._gen.manual_seed(derive_seed(seed, "stream", "sampling"))
        self._step = 0
        self._exposure: dict[int, float] = {}

    def __len__(self) -> int:
        return self.num_tasks * self.schedule.task_length

    @property
    def step(self) -> int:
        """Steps taken so far (the index of the next batch)."""
        return self._step

    def classes(self, distribution: int) -> tuple[int, ...] | None:
        """Labels distribution ``distribution`` draws from, ``None`` meaning all."""
        allowed: tuple[int, ...] | None = None
        for drift in self.drifts:
            c = drift.classes(distribution)
            if c is not None:
                allowed = c if allowed is None else tuple(v for v in allowed if v in c)
        return allowed

    def draw(self, distribution: int, n: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` transformed examples of ``distribution`` as seen at ``step`` (uses the stream's
        generator, so it advances the stream's randomness)."""
        x, y = self.source.sample(self._gen, n, distribution, self.classes(distribution))
        for drift in self.drifts:
            x, y = drift.apply(x, y, distribution, step, self._gen)
        return x, y

    def _novelty(self, phase: Phase, incoming_fraction: float) -> float:
        weights = {phase.current: 1.0 - incoming_fraction}
        weights[phase.incoming] = weights.get(phase.incoming, 0.0) + incoming_fraction
        novelty = sum(
            w * math.exp(-self._exposure.get(d, 0.0) / self.novelty_timescale)
            for d, w in weights.items()
        )
        for d, w in weights.items():
            self._exposure[d] = self._exposure.get(d, 0.0) + w
        return float(novelty)

    def next_batch(self) -> Batch:
        """The next batch; the stream may be read past ``len(self)`` (the schedule continues)."""
        step = self._step
        phase = self.schedule.phase(step)
        n = self.batch_size
        if phase.incoming != phase.current and phase.weight > 0:
            from_incoming = torch.rand(n, generator=self._gen) < phase.weight
            n_in = int(from_incoming.sum())
            x_old, y_old = self.draw(phase.current, n - n_in, step)
            x_new, y_new = self.draw(phase.incoming, n_in, step)
            x = torch.empty((n, *x_old.shape[1:]), dtype=x_old.dtype)
            y = torch.empty((n, *y_old.shape[1:]), dtype=y_old.dtype)
            x[~from_incoming], y[~from_incoming] = x_old, y_old
            x[from_incoming], y[from_incoming] = x_new, y_new
            fraction = n_in / n
        else:
            x, y = self.draw(phase.current, n, step)
            fraction = 0.0
        dominant = phase.incoming if fraction > 0.5 else phase.current
        novelty = self._novelty(phase, fraction)
        self._step += 1
        return Batch(x, y, step, phase.task_index, dominant, self.drift_name, novelty, fraction)

    def __iter__(self) -> Iterator[Batch]:
        """Iterate from the current position to the end of the stream (``len(self)`` steps)."""
        while self._step < len(self):
            yield self.next_batch()

    def peek(self, n: int) -> list[Batch]:
        """The next ``n`` batches, without consuming them (the stream continues as if never
        read): what a surgery's no-surgery control is measured on."""
        state = self.state_dict()
        try:
            return [self.next_batch() for _ in range(n)]
        finally:
            self.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """Position, sampling generator and exposures: enough to continue bit-exactly."""
        return {
            "step": self._step,
            "generator": self._gen.get_state(),
            "exposure": dict(self._exposure),
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict` into a stream built the same way."""
        if state["seed"] != self.seed:
            raise ValueError(
                f"state was saved from a stream with seed {state['seed']}, this one has {self.seed}"
            )
        self._step = int(state["step"])
        self._gen.set_state(state["generator"])
        self._exposure = {int(k): float(v) for k, v in state["exposure"].items()}
