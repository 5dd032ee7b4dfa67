"""The organism: a living network as an environment at the surgery timescale.

An organism is a host network whose prunable tensors are masked by a :class:`Scalpel`, an
optimizer, a drifting stream and a :class:`NervousSystem`. It offers a gym-like interface:
:meth:`Organism.reset` trains ``K`` prequential SGD steps and senses; :meth:`Organism.step`
applies one surgery and reads top to bottom as validate actions → (data side: guard the
prunes, refresh the buffer) → apply surgery → train ``K`` steps (replay mixed in) → sense →
score → emit events. Every policy (heuristic baselines and Emrakul) acts through
this interface, so comparisons are like for like.

Its parts live in modules of their own: ``actions``, ``anesthesia`` (sedation), ``forgetting``
(FGSF), ``operation`` (a surgery applied), ``memory`` (the data side), ``reward``,
``surgical_events``, ``prequential`` and ``factory`` (building one from a config) of
:mod:`esper.workloads`, whose device rules apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from esper.config import RewardConfig
from esper.errors import DivergedError
from esper.events import SurgicalEvent
from esper.seeding import derive_seed
from esper.workloads.actions import LayerAction
from esper.workloads.anesthesia import Sedation
from esper.workloads.hosts import Host
from esper.workloads.mask_age import MaskAge
from esper.workloads.memory import DataAction, DataSide
from esper.workloads.operation import Patient, operate
from esper.workloads.organism_state import load_organism_state, organism_state
from esper.workloads.prequential import (
    OnlineWindow,
    PendingScores,
    StepRecord,
    batch_loss,
    train_step,
)
from esper.workloads.reward import RewardComponents, score_surgery
from esper.workloads.scalpel import Scalpel
from esper.workloads.sensors import NervousSystem, Reading
from esper.workloads.sensors.config import check_fused
from esper.workloads.sensors.fused import TrainingTraffic
from esper.workloads.spike import probe_loss
from esper.workloads.stream import Batch, DriftStream
from esper.workloads.surgical_events import EventBuilder, EventContext
from esper.workloads.timestep import OrganismStep, Surgery
from esper.workloads.vital_signs import vital_signs

__all__ = ["Organism", "OrganismStep", "Surgery"]


class Organism:
    """A living network at the surgery timescale.

    Args:
        host: The host network (on its device; the stream's batches are moved there).
        stream: Its drifting stream.
        scalpel: Masks on the host's prunable tensors.
        nervous_system: Sensors; prepared here on the stream's first batch shape.
        optimizer: Optimizer of the host, one parameter group per prunable tensor (named by
            the ``"layer"`` key) so sedation can damp single layers; see
            :func:`esper.workloads.factory.build_optimizer`.
        surgery_interval: ``K``, prequential SGD steps between surgeries.
        reward: Reward weights.
        penalty_weight: Weight of the mask mechanism's penalty (Hard Concrete's expected L0).
        spike_window: Steps before and after a surgery compared by the spike term.
        sense_batches: Most recent training batches (concatenated) the sensors read.
        seed: Seed of the organism's own random stream (unit re-initialisation).
        run_id, trial_id, replica_id: Identity for events.
        data_side: A replay buffer with synchronized retention
            (:class:`~esper.workloads.memory.DataSide`; classification only), or ``None``.
    """

    def __init__(
        self,
        host: Host,
        stream: DriftStream,
        scalpel: Scalpel,
        nervous_system: NervousSystem,
        optimizer: torch.optim.Optimizer,
        surgery_interval: int,
        reward: RewardConfig | None = None,
        penalty_weight: float = 0.0,
        spike_window: int = 5,
        sense_batches: int = 4,
        seed: int = 0,
        run_id: str = "",
        trial_id: str = "",
        replica_id: int = 0,
        data_side: DataSide | None = None,
    ) -> None:
        if data_side is not None and stream.source.kind != "classification":
            raise ValueError(f"a data side needs a classification stream, not {stream.source.kind}")
        if surgery_interval < 1:
            raise ValueError(f"surgery_interval must be ≥ 1, got {surgery_interval}")
        if not 1 <= spike_window <= surgery_interval:
            raise ValueError(f"spike_window must be in 1..surgery_interval, got {spike_window}")
        if sense_batches < 1:
            raise ValueError(f"sense_batches must be ≥ 1, got {sense_batches}")
        self.host = host
        self.stream = stream
        self.scalpel = scalpel
        self.nervous = nervous_system
        self.optimizer = optimizer
        self.K = surgery_interval
        self.reward_weights = reward or RewardConfig()
        self.penalty_weight = penalty_weight
        self.spike_window = spike_window
        self.sense_batches = sense_batches
        self.kind = stream.source.kind
        self.data_side = data_side
        self.device = next(host.parameters()).device
        self.sedation = Sedation(optimizer, scalpel.names)
        self.events = EventBuilder(scalpel, run_id, trial_id, replica_id)
        self.scalpel.bind_optimizer(optimizer)
        self.sgd_step = 0
        self.surgery_step = 0
        self.generator = torch.Generator()
        self.generator.manual_seed(derive_seed(seed, "organism", replica_id))
        self.mask_age = MaskAge({n: scalpel.numel(n) for n in scalpel.names}, self.device)
        self._recent: list[Batch] = []
        self._window = OnlineWindow()
        self._last: Reading | None = None
        self._input_shape = tuple(stream.source.input_shape)
        example = stream.source.sample(torch.Generator().manual_seed(0), 2, 0)[0]
        self.nervous.prepare(host, example.to(self.device))
        self.traffic = self._fused() if nervous_system.config.fused else None

    # -- the environment interface -----------------------------------------------------------

    def reset(self) -> OrganismStep:
        """Train the first ``K`` steps without surgery and sense.

        Raises:
            DivergedError: the host diverged before the first reading.
        """
        self._window = OnlineWindow()
        events, diverged = self.train_steps()
        if diverged:
            raise DivergedError(
                f"the host diverged during its first {self.K} steps (loss "
                f"{self._window.loss[-1]}); lower workload.lr"
            )
        reading = self._sense()
        return self._result(reading, 0.0, None, events, diverged, self._window)

    def step(
        self, actions: Mapping[str, LayerAction], data: DataAction | None = None
    ) -> OrganismStep:
        """Apply one surgery, train ``K`` steps, sense, and score the surgery.

        Args:
            actions: Per layer (full parameter name) what to do; layers left out are untouched.
            data: The data side's action (how much of the buffer to refresh, with which rule;
                default: the memory's own); ignored without a data side.

        When the host diverges during the ``K`` steps, ``info["diverged"]`` is true, training
        stops at the first non-finite loss, and the observations are those of the last reading.

        Raises:
            KeyError: an action names a tensor the Scalpel does not mask.
            esper.workloads.actions.InvalidActionError: an action is out of range (nothing
                is applied).
        """
        surgery = self.begin(actions, data)
        trained, diverged = self.train_steps()
        return self.finish(surgery, trained, diverged)

    def begin(
        self,
        actions: Mapping[str, LayerAction],
        data: DataAction | None = None,
        *,
        control_loss: float | None = None,
    ) -> Surgery:
        """The first half of :meth:`step`: validate the surgery, let the data side guard it and
        refresh its buffer (``data``), apply it, open a new online window. Train ``K`` steps
        (:meth:`step` does; a :class:`~esper.workloads.cohort.Cohort` trains its members
        together), then call :meth:`finish`.

        ``control_loss``: the spike control's loss, measured by the caller on the next
        ``spike_window`` batches (``stream.peek``) right before (after the data side's guard,
        which changes no weight); the caller then measures the operated host on them too and
        sets the surgery's ``operated_loss``, which is ``None`` until then (a cohort measures
        all its members in one pass). ``None``: both are measured here."""
        if self._last is None:
            raise RuntimeError("call reset() before step()")
        self.validate(actions)
        noted: list[SurgicalEvent] = []
        if self.data_side is not None:  # guards the prunes, refreshes the buffer
            actions, noted = self.data_side.operate(
                self.host, self.scalpel, actions, data, self.events, self._context()
            )
        loss_before = self._window.mean("loss", last=self.spike_window)
        if control_loss is None:  # the same batches with and without surgery
            probe = self.stream.peek(self.spike_window)
            control = probe_loss(self.host, probe, self.kind, self.device)
        else:
            probe, control = [], control_loss  # the caller measures both
        events, touched, changed = operate(self._patient(), actions, self._context())
        operated = probe_loss(self.host, probe, self.kind, self.device) if probe else None
        self.nervous.record_masks(self.scalpel.masks())
        self.surgery_step += 1
        self._window = OnlineWindow()
        return Surgery(self._last, loss_before, noted + events, touched, changed, control, operated)

    def finish(
        self, surgery: Surgery, trained: list[SurgicalEvent], diverged: bool
    ) -> OrganismStep:
        """The second half of :meth:`step`, after its ``K`` training steps: sense, score the
        surgery and fill its events' reward fields."""
        if surgery.operated_loss is None:
            raise RuntimeError(
                "the surgery's operated loss was never measured: a caller that gives begin() "
                "its control_loss measures the operated host too (as Cohort.begin does)"
            )
        before, loss_before, touched = surgery.before, surgery.loss_before, surgery.touched
        events = surgery.events + trained
        window = self._window
        # A diverged host (NaN/Inf loss) cannot be sensed: the last reading stands, and the
        # platform quarantines the replica and restores its last healthy checkpoint.
        reading = before if diverged else self._sense()
        components = score_surgery(
            reading,
            accuracy=window.mean("accuracy"),
            flops_ratio=self.scalpel.flops(self._input_shape).ratio,
            sizes={n: self.scalpel.numel(n) for n in self.scalpel.names},
            loss_before=surgery.control_loss,
            loss_after=surgery.operated_loss,
        )
        reward = components.weighted(self.reward_weights)
        loss_after = window.mean("loss")
        self.nervous.record_surgeries(before, touched, surgery.changed, loss_after - loss_before)
        for event in events:
            event.reward = reward
            event.r_accuracy = components.accuracy
            event.r_flops = components.flops
            event.r_oscillation = components.oscillation
            event.r_gsnr = components.gsnr
            event.r_spike = components.spike
            event.loss_after = loss_after
        return self._result(reading, reward, components, events, diverged, window)

    def current(self) -> OrganismStep:
        """The latest step as a policy sees it, without training or sensing (what to act on
        after a restore). Raises ``RuntimeError`` before :meth:`reset`."""
        if self._last is None:
            raise RuntimeError("call reset() before current()")
        return self._result(self._last, 0.0, None, [], False, self._window)

    def age(self, name: str) -> torch.Tensor:
        """Per weight of ``name`` (flat), surgeries since its mask state last changed."""
        return self.mask_age.age(name, self.surgery_step)

    def _patient(self) -> Patient:
        """The parts a surgery operates on (:func:`~esper.workloads.operation.operate`)."""
        return Patient(self.host, self.scalpel, self.optimizer, self.generator, self.events,
                       self.mask_age, self.sedation)  # fmt: skip

    def validate(self, actions: Mapping[str, LayerAction]) -> None:
        """Refuse actions that name unknown layers or are out of range (nothing applied)."""
        if unknown := [n for n in actions if n not in self.scalpel.names]:
            raise KeyError(f"actions for unknown layers {unknown}; layers: {self.scalpel.names}")
        for name, act in actions.items():
            act.validate(name, (mask := self.scalpel.mask(name)).numel(), mask.shape[0])

    # -- training and sensing ------------------------------------------------------------------

    def train_steps(self) -> tuple[list[SurgicalEvent], bool]:
        """``K`` prequential steps; stops at the first non-finite loss (returns ``True``)."""
        with self.scalpel.explicit_grad_masking() as mask:  # one call per step, not a hook each
            return self._train(mask)

    def _train(self, mask: Callable[[], None] | None) -> tuple[list[SurgicalEvent], bool]:
        events: list[SurgicalEvent] = []
        penalty = (
            (lambda: self.penalty_weight * self.scalpel.penalty()) if self.penalty_weight else None
        )
        pending = PendingScores(self.kind)  # accuracies are read together
        if self.traffic is not None:
            self.traffic.clear()
        for k in range(self.K):
            batch = self.stream.next_batch().to(self.device)
            side = self.data_side
            self.sedation.before_step()
            self.scalpel.capture_dense_grad = k == self.K - 1  # regrowth reads the last one
            mixed = side.mix(batch) if side is not None else batch
            with self._recording(k, batch, dense_grads=mask is not None and penalty is None):
                loss, out = train_step(self.host, self.optimizer, mixed, self.kind, penalty, mask)
            if side is not None:  # scored on the stream's rows only
                out = side.observe(out)
                loss = batch_loss(out, batch.y, self.kind)
            pending.add(batch, value := float(loss), out)
            if changes := self.scalpel.after_step():  # masks changed by the mechanism (ATM)
                self._note(pending)
                ctx = self._context()
                for change in changes:
                    for action, idx in (("prune", change.pruned), ("regrow", change.regrown)):
                        if idx.numel():
                            self.mask_age.touch(change.name, idx, self.surgery_step)
                            events.append(self.events.event(ctx, change.name, action, idx))
            if not math.isfinite(value):
                self._note(pending)
                return events, True
        self._note(pending)
        return events, False

    def _fused(self) -> TrainingTraffic:
        """Fused sensing's record of the last ``sense_batches`` training steps."""
        side = self.data_side
        check_fused(sense_batches=self.sense_batches, surgery_interval=self.K,
                    memory_capacity=0 if side is None else side.memory.capacity)  # fmt: skip
        return TrainingTraffic(self.host, self.nervous.graph.names, self.sense_batches)

    def _recording(self, k: int, batch: Batch, dense_grads: bool) -> AbstractContextManager[None]:
        """Fused sensing keeps the traffic of the interval's last ``sense_batches`` steps (and
        their weight gradients, when masking them waits until after backward)."""
        if self.traffic is None or k < self.K - self.sense_batches:
            return nullcontext()
        return self.traffic.record(batch.y, dense_grads=dense_grads)

    def _note(self, pending: PendingScores) -> None:
        for record, batch in pending.flush():
            self.note_step(record, batch)

    def note_step(self, record: StepRecord, batch: Batch) -> None:
        """Count a training step on ``batch`` that measured ``record`` (window, recent batches)."""
        self.sgd_step += 1
        self._window.add(record)
        self._recent.append(batch)
        del self._recent[: -self.sense_batches]

    def _sense(self) -> Reading:
        x = torch.cat([b.x for b in self._recent])
        y = torch.cat([b.y for b in self._recent])
        reading = self.nervous.sense(self.host, x, y, self.scalpel.masks(), traffic=self.traffic)
        self._last = reading
        return reading

    def _context(self) -> EventContext:
        return EventContext(
            drift=self.stream.drift_name,
            task_index=self._recent[-1].task_index if self._recent else 0,
            sgd_step=self.sgd_step,
            surgery_step=self.surgery_step,
            acc_before=self._window.mean("accuracy", last=self.spike_window),
            loss_before=self._window.mean("loss", last=self.spike_window),
            reading=self._last,
        )

    def _result(
        self,
        reading: Reading,
        reward: float,
        components: RewardComponents | None,
        events: list[SurgicalEvent],
        diverged: bool,
        window: OnlineWindow,
    ) -> OrganismStep:
        info = {
            "sgd_step": self.sgd_step,
            "surgery_step": self.surgery_step,
            "task_index": self._recent[-1].task_index if self._recent else 0,
            "online_accuracy": window.mean("accuracy"),
            "accuracies": tuple(window.accuracy),
            "online_loss": window.mean("loss"),
            "density": self.scalpel.global_density(),
            "densities": self.scalpel.densities(),
            "novelty": window.mean("novelty"),
            "fgsf": sorted(reading.fgsf.layers),
            "diverged": diverged,
        }
        flops = components.flops if components else self.scalpel.flops(self._input_shape).ratio
        signs = vital_signs(window, self.spike_window, flops, reading.observations)
        state = reading.global_state.extended(signs)
        return OrganismStep(reading.observations, state, reward, components, events, reading, info)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly
        (:func:`~esper.workloads.organism_state.organism_state`)."""
        return organism_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into an organism built the same way."""
        load_organism_state(self, state)
