"""The organism: a living network as an environment at the surgery timescale.

An organism is a host network whose prunable tensors are masked by a :class:`Scalpel`, an
optimizer, a drifting stream and a :class:`NervousSystem`. It offers a gym-like interface:
:meth:`Organism.reset` trains ``K`` prequential SGD steps and senses; :meth:`Organism.step`
applies one surgery (per-layer prune/regrow indices, temperatures, sedation), trains the next
``K`` steps, senses again, and returns the observations, the global state, the five reward
components, the surgical events and diagnostics. Every policy (heuristic baselines and
Emrakul) acts through this interface, so comparisons are like for like.

The reward components are raw measurements; the policy's reward is their weighted sum
``α·Acc − β·FLOPs − γ·Osc + δ·GSNR − ε·Spike`` with weights from the ``reward`` config group.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from esper.config import EsperConfig, Optimizer, RewardConfig
from esper.events.record import SurgicalEvent
from esper.registry import build
from esper.seeding import derive_seed
from esper.workloads.factory import build_host, build_stream
from esper.workloads.hosts import Host
from esper.workloads.scalpel import Scalpel
from esper.workloads.sensors import NervousSystem, Reading, SensorConfig
from esper.workloads.sensors.state import GlobalState, Observation
from esper.workloads.stream import Batch, DriftStream
from esper.workloads.units import reset_units

__all__ = [
    "LayerAction",
    "Organism",
    "OrganismStep",
    "RewardComponents",
    "build_organism",
    "make_optimizer",
]


@dataclass
class LayerAction:
    """One layer's part of a surgery.

    Attributes:
        prune: Flat indices to remove from the support.
        regrow: Flat indices to add to the support.
        regrow_init: How regrown weights start (``zero`` as RigL, ``kaiming``, ...).
        tau: New Gumbel temperature of the layer (``None``: unchanged).
        sedation: Learning-rate multiplier of the layer for ``sedation_steps`` SGD steps.
        sedation_steps: How long the sedation lasts (0: none).
        reset_units: Output units (rows of the weight: neurons or channels) to re-initialise,
            as CBP and ReDo do: fresh incoming weights on the unit's support, zero outgoing
            weights in the consuming layer, optimizer state reset
            (:func:`esper.workloads.units.reset_units`).
        target_density: The layer density the surgeon now aims for (the Surgeon General's
            allocation), recorded as a ``budget`` event; the prune/regrow indices enact it.
    """

    prune: torch.Tensor | Sequence[int] = ()
    regrow: torch.Tensor | Sequence[int] = ()
    regrow_init: str = "zero"
    tau: float | None = None
    sedation: float = 1.0
    sedation_steps: int = 0
    reset_units: torch.Tensor | Sequence[int] = ()
    target_density: float | None = None


@dataclass(frozen=True)
class RewardComponents:
    """The five raw reward terms of one surgery step.

    Attributes:
        accuracy: Online accuracy over the ``K`` steps after the surgery (for regression,
            ``1 / (1 + MSE)``).
        flops: Sparse ÷ dense forward FLOPs after the surgery.
        oscillation: Parameter-weighted mask flip-flop rate.
        gsnr: Mean layer GSNR ``g``, squashed as ``g / (1 + g)``.
        spike: Relative rise of the online loss right after the surgery over the loss right
            before it, ``max(0, (after − before) / before)``.
    """

    accuracy: float
    flops: float
    oscillation: float
    gsnr: float
    spike: float

    def weighted(self, w: RewardConfig) -> float:
        """``α·Acc − β·FLOPs − γ·Osc + δ·GSNR − ε·Spike``."""
        return (
            w.alpha * self.accuracy
            - w.beta * self.flops
            - w.gamma * self.oscillation
            + w.delta * self.gsnr
            - w.epsilon * self.spike
        )


@dataclass(frozen=True)
class OrganismStep:
    """What :meth:`Organism.reset` and :meth:`Organism.step` return.

    Attributes:
        observations: Local observation per layer (Specialists see only their layer's).
        global_state: The centralized critic's state.
        reward: Weighted reward of the step (0 after ``reset``).
        components: The raw reward terms (``None`` after ``reset``).
        events: Surgical events of the step, reward fields filled in.
        reading: The full sensor reading behind the observations.
        info: Diagnostics: ``sgd_step``, ``surgery_step``, ``task_index``, ``online_accuracy``,
            ``online_loss``, ``density``, ``densities``, ``novelty`` (ground truth, for analysis
            only — never an observation), ``diverged``.
    """

    observations: dict[str, Observation]
    global_state: GlobalState
    reward: float
    components: RewardComponents | None
    events: list[SurgicalEvent]
    reading: Reading
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Window:
    """Online metrics of the SGD steps since the last surgery."""

    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    novelty: list[float] = field(default_factory=list)


def _scalpel_seed(scalpel: Scalpel) -> int:
    """A seed derived from the Scalpel's generator state (so organisms built with different
    seeds draw different unit re-initialisations)."""
    return int(scalpel.generator.initial_seed())


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


class Organism:
    """A living network at the surgery timescale.

    Args:
        host: The host network.
        stream: Its drifting stream.
        scalpel: Masks on the host's prunable tensors.
        nervous_system: Sensors; prepared here on the stream's first batch shape.
        optimizer: Optimizer of the host, one parameter group per prunable tensor (named by
            the ``"layer"`` key) so sedation can damp single layers; see
            :func:`make_optimizer`.
        surgery_interval: ``K``, prequential SGD steps between surgeries.
        reward: Reward weights.
        penalty_weight: Weight of the mask mechanism's penalty (Hard Concrete's expected L0).
        spike_window: Steps before and after a surgery compared by the spike term.
        sense_batches: Most recent training batches (concatenated) the sensors read.
        run_id: Identity for events.
        trial_id: Identity for events.
        replica_id: Identity for events.
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
        run_id: str = "",
        trial_id: str = "",
        replica_id: int = 0,
    ) -> None:
        if surgery_interval < 1:
            raise ValueError(f"surgery_interval must be ≥ 1, got {surgery_interval}")
        if not 1 <= spike_window <= surgery_interval:
            raise ValueError(f"spike_window must be in 1..surgery_interval, got {spike_window}")
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
        self.identity = (run_id, trial_id, replica_id)
        self.kind = stream.source.kind
        groups = self._groups()
        missing = [n for n in scalpel.names if n not in groups]
        if missing:
            raise ValueError(
                f"optimizer has no parameter group for layers {missing}; use make_optimizer"
            )
        self._base_lr = {name: float(g["lr"]) for name, g in groups.items()}
        self._sedation: dict[str, tuple[float, int]] = {}
        self.scalpel.bind_optimizer(optimizer)
        self.sgd_step = 0
        self.surgery_step = 0
        self._generator = torch.Generator()
        self._generator.manual_seed(derive_seed(_scalpel_seed(scalpel), "organism", replica_id))
        self._changed_at = {
            n: torch.zeros(scalpel.numel(n), dtype=torch.int64) for n in scalpel.names
        }
        self._recent: list[Batch] = []
        self._window = _Window()
        self._last: Reading | None = None
        self._input_shape = tuple(stream.source.input_shape)
        example = stream.source.sample(torch.Generator().manual_seed(0), 2, 0)[0]
        self.nervous.prepare(host, example)

    # -- training --------------------------------------------------------------------------

    def _groups(self) -> dict[str, dict[str, Any]]:
        """Parameter groups by layer (looked up each time: loading optimizer state replaces
        the group dicts)."""
        return {g["layer"]: g for g in self.optimizer.param_groups if "layer" in g}

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "classification":
            return F.cross_entropy(out, y)
        return F.mse_loss(out.squeeze(-1), y)

    def _sgd_step(self, batch: Batch, capture_dense: bool) -> list[SurgicalEvent]:
        """One prequential step: score the batch, then train on it."""
        self.host.train()
        groups = self._groups() if self._sedation else {}
        for name, (multiplier, left) in list(self._sedation.items()):
            groups[name]["lr"] = self._base_lr[name] * (multiplier if left > 0 else 1.0)
            if left <= 0:
                del self._sedation[name]
            else:
                self._sedation[name] = (multiplier, left - 1)
        self.scalpel.capture_dense_grad = capture_dense
        out = self.host(batch.x)
        loss = self._loss(out, batch.y)
        if self.kind == "classification":
            acc = float((out.detach().argmax(dim=1) == batch.y).float().mean())
        else:
            acc = 1.0 / (1.0 + float(loss.detach()))
        total = loss + self.penalty_weight * self.scalpel.penalty() if self.penalty_weight else loss
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        changes = self.scalpel.after_step()
        self.sgd_step += 1
        self._window.accuracy.append(acc)
        self._window.loss.append(float(loss.detach()))
        self._window.novelty.append(batch.novelty)
        self._recent.append(batch)
        del self._recent[: -self.sense_batches]
        events = []
        for change in changes:
            for action, idx in (("prune", change.pruned), ("regrow", change.regrown)):
                if idx.numel():
                    self._changed_at[change.name][idx.view(-1)] = self.surgery_step
                    events.append(self._event(change.name, action, idx, batch))
        return events

    def _train(self) -> tuple[list[SurgicalEvent], bool]:
        events: list[SurgicalEvent] = []
        for k in range(self.K):
            events += self._sgd_step(self.stream.next_batch(), capture_dense=k == self.K - 1)
            if not math.isfinite(self._window.loss[-1]):
                return events, True
        return events, False

    def _sense(self) -> Reading:
        x = torch.cat([b.x for b in self._recent])
        y = torch.cat([b.y for b in self._recent])
        reading = self.nervous.sense(self.host, x, y, self.scalpel.masks())
        self._last = reading
        return reading

    # -- events ----------------------------------------------------------------------------

    def _event(
        self,
        layer: str,
        action: str,
        indices: torch.Tensor | None,
        batch: Batch | None = None,
        **values: float,
    ) -> SurgicalEvent:
        run_id, trial_id, replica_id = self.identity
        batch = batch or (self._recent[-1] if self._recent else None)
        density = self.scalpel.density(layer) if layer else self.scalpel.global_density()
        idx = [] if indices is None else indices.to(torch.int64).view(-1).tolist()
        reading = self._last
        layer_stats = reading.gradients.layers.get(layer) if reading and layer else None
        hessian = reading.hessian.get(layer) if reading and layer else None
        flip = reading.flipflop.get(layer) if reading and layer else None
        before = _mean(self._window.accuracy[-self.spike_window :])
        return SurgicalEvent(
            run_id=run_id,
            trial_id=trial_id,
            replica_id=replica_id,
            drift=self.stream.drift_name,
            task_index=batch.task_index if batch else 0,
            sgd_step=self.sgd_step,
            surgery_step=self.surgery_step,
            layer=layer,
            action=action,
            count=len(idx) if indices is not None else 0,
            indices=idx,
            density_before=values.pop("density_before", density),
            density_after=density,
            tau=self._tau(layer),
            value=values.pop("value", float("nan")),
            acc_before=before,
            loss_before=_mean(self._window.loss[-self.spike_window :]),
            fisher_trace=layer_stats.fisher_trace if layer_stats else float("nan"),
            gsnr=layer_stats.gsnr_mean if layer_stats else float("nan"),
            hessian_trace=hessian.trace if hessian else float("nan"),
            flipflop_rate=flip.rate if flip else float("nan"),
            wall_time=time.time(),
        )

    def _tau(self, layer: str) -> float:
        if not layer:
            return float("nan")
        try:
            return float(self.scalpel.temperature(layer))
        except (KeyError, ValueError):  # the mechanism has no temperature for this tensor
            return float("nan")

    # -- the environment interface -----------------------------------------------------------

    def _result(
        self,
        reading: Reading,
        reward: float,
        components: RewardComponents | None,
        events: list[SurgicalEvent],
        diverged: bool,
        window: _Window,
    ) -> OrganismStep:
        info = {
            "sgd_step": self.sgd_step,
            "surgery_step": self.surgery_step,
            "task_index": self._recent[-1].task_index if self._recent else 0,
            "online_accuracy": _mean(window.accuracy),
            "online_loss": _mean(window.loss),
            "density": self.scalpel.global_density(),
            "densities": self.scalpel.densities(),
            "novelty": _mean(window.novelty),
            "fgsf": sorted(reading.fgsf.layers),
            "diverged": diverged,
        }
        return OrganismStep(
            reading.observations, reading.global_state, reward, components, events, reading, info
        )

    def reset(self) -> OrganismStep:
        """Train the first ``K`` steps without surgery and sense.

        Raises:
            FloatingPointError: the host diverged before the first reading.
        """
        self._window = _Window()
        events, diverged = self._train()
        if diverged:
            raise FloatingPointError(
                f"the host diverged during its first {self.K} steps (loss "
                f"{self._window.loss[-1]}); lower workload.lr"
            )
        reading = self._sense()
        return self._result(reading, 0.0, None, events, diverged, self._window)

    def step(self, actions: Mapping[str, LayerAction]) -> OrganismStep:
        """Apply one surgery, train ``K`` steps, sense, and score the surgery.

        Args:
            actions: Per layer (full parameter name) what to do; layers left out are untouched.

        When the host diverges during the ``K`` steps, ``info["diverged"]`` is true, training
        stops at the first non-finite loss, and the observations are those of the last reading.

        Raises:
            KeyError: an action names a tensor the Scalpel does not mask.
        """
        if self._last is None:
            raise RuntimeError("call reset() before step()")
        unknown = [n for n in actions if n not in self.scalpel.names]
        if unknown:
            raise KeyError(f"actions for unknown layers {unknown}; layers: {self.scalpel.names}")
        before_reading = self._last
        loss_before = _mean(self._window.loss[-self.spike_window :])
        events: list[SurgicalEvent] = []
        touched: dict[str, dict[str, float]] = {}
        for name, act in actions.items():
            density_before = self.scalpel.density(name)
            active = max(1, int(self.scalpel.mask(name).sum()))
            pruned, regrown = self._cut(name, act)
            if pruned.numel():
                events.append(self._event(name, "prune", pruned, density_before=density_before))
            if regrown.numel():
                events.append(self._event(name, "regrow", regrown, density_before=density_before))
            if act.target_density is not None:
                events.append(
                    self._event(
                        name,
                        "budget",
                        None,
                        density_before=density_before,
                        value=act.target_density,
                    )
                )
            units = torch.as_tensor(act.reset_units, dtype=torch.int64).view(-1)
            if units.numel():
                count = reset_units(
                    self.host, self.scalpel, self.optimizer, name, units, self._generator
                )
                events.append(self._event(name, "reset", units, value=float(count)))
            if act.tau is not None:
                self.scalpel.set_temperature(name, act.tau)
                events.append(self._event(name, "temperature", None, value=act.tau))
            if act.sedation_steps > 0 and act.sedation != 1.0:
                self._sedation[name] = (act.sedation, act.sedation_steps)
                events.append(self._event(name, "sedate", None, value=act.sedation))
            touched[name] = {
                "prune_fraction": pruned.numel() / active,
                "regrow_fraction": regrown.numel() / active,
            }
        self.nervous.record_masks(self.scalpel.masks())
        self.surgery_step += 1
        self._window = _Window()
        trained, diverged = self._train()
        events += trained
        window = self._window
        # A diverged host (NaN/Inf loss) cannot be sensed: the last reading stands, and the
        # platform quarantines the replica and restores its last healthy checkpoint.
        reading = before_reading if diverged else self._sense()
        after = _mean(window.loss[: self.spike_window])
        components = RewardComponents(
            accuracy=_mean(window.accuracy),
            flops=self.scalpel.flops(self._input_shape).ratio,
            oscillation=self._oscillation(reading),
            gsnr=self._gsnr(reading),
            spike=max(0.0, (after - loss_before) / max(abs(loss_before), 1e-12)),
        )
        reward = components.weighted(self.reward_weights)
        loss_after = _mean(window.loss)
        for name, features in touched.items():
            if any(features.values()):
                self.nervous.record_surgery(
                    before_reading, name, features, loss_after - loss_before
                )
        for event in events:
            event.reward = reward
            event.r_accuracy = components.accuracy
            event.r_flops = components.flops
            event.r_oscillation = components.oscillation
            event.r_gsnr = components.gsnr
            event.r_spike = components.spike
            event.loss_after = loss_after
        return self._result(reading, reward, components, events, diverged, window)

    def age(self, name: str) -> torch.Tensor:
        """Per weight of ``name`` (flat), surgeries since its mask state last changed."""
        return self.surgery_step - self._changed_at[name]

    def _cut(self, name: str, act: LayerAction) -> tuple[torch.Tensor, torch.Tensor]:
        """Prune, then regrow; returns the flat indices that actually changed state."""
        prune = torch.as_tensor(act.prune, dtype=torch.int64).view(-1)
        regrow = torch.as_tensor(act.regrow, dtype=torch.int64).view(-1)
        before = self.scalpel.mask(name).view(-1).clone()
        if prune.numel():
            self.scalpel.prune(name, prune)
        middle = self.scalpel.mask(name).view(-1).clone()
        if regrow.numel():
            self.scalpel.regrow(name, regrow, init=act.regrow_init)
        after = self.scalpel.mask(name).view(-1)
        pruned, regrown = (
            (before & ~middle).nonzero().view(-1),
            (~middle & after).nonzero().view(-1),
        )
        self._changed_at[name][pruned] = self.surgery_step
        self._changed_at[name][regrown] = self.surgery_step
        return pruned, regrown

    def _oscillation(self, reading: Reading) -> float:
        sizes = {n: self.scalpel.numel(n) for n in self.scalpel.names}
        total = sum(sizes.values())
        return float(sum(reading.flipflop[n].rate * sizes[n] for n in reading.flipflop) / total)

    @staticmethod
    def _gsnr(reading: Reading) -> float:
        g = reading.gradients.gsnr_mean
        return float(g / (1.0 + g)) if math.isfinite(g) else 0.0

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly: host, optimizer, masks, sensors,
        stream position, counters, sedation and the recent batches."""
        return {
            "host": {k: v.clone() for k, v in self.host.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scalpel": self.scalpel.state_dict(),
            "nervous": self.nervous.state_dict(),
            "stream": self.stream.state_dict(),
            "sgd_step": self.sgd_step,
            "surgery_step": self.surgery_step,
            "sedation": dict(self._sedation),
            "changed_at": {n: t.clone() for n, t in self._changed_at.items()},
            "recent": [b for b in self._recent],
            "window": (
                list(self._window.accuracy),
                list(self._window.loss),
                list(self._window.novelty),
            ),
            "last": self._last,
            "rng": torch.get_rng_state(),
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into an organism built the same way."""
        self.host.load_state_dict(state["host"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scalpel.load_state_dict(state["scalpel"])
        self.nervous.load_state_dict(state["nervous"])
        self.stream.load_state_dict(state["stream"])
        self.sgd_step = int(state["sgd_step"])
        self.surgery_step = int(state["surgery_step"])
        self._sedation = dict(state["sedation"])
        self._changed_at = {n: t.clone() for n, t in state["changed_at"].items()}
        self._recent = list(state["recent"])
        acc, loss, novelty = state["window"]
        self._window = _Window(list(acc), list(loss), list(novelty))
        torch.set_rng_state(state["rng"])
        self._generator.set_state(state["generator"])
        self._last = state["last"]


def make_optimizer(
    optimizer: Optimizer, lr: float, momentum: float, host: nn.Module, scalpel: Scalpel
) -> torch.optim.Optimizer:
    """The host's optimizer with one parameter group per prunable tensor (for sedation), one
    for the remaining host parameters and one for the mask mechanism's learnable parts."""
    prunable: set[int] = set()
    named = dict(host.named_parameters())
    groups: list[dict[str, Any]] = []
    for name in scalpel.names:
        groups.append({"params": [named[name]], "layer": name})
        prunable.add(id(named[name]))
    rest = [p for p in host.parameters() if id(p) not in prunable]
    if rest:
        groups.append({"params": rest})
    extra = list(scalpel.parameters())
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    if optimizer == Optimizer.adam:
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def build_organism(
    cfg: EsperConfig, replica_id: int = 0, run_id: str = "", trial_id: str = ""
) -> Organism:
    """The organism described by a composed config.

    The seed of replica ``r`` is derived from ``experiment.seed`` and ``r``, so replicas of one
    trial see different streams and initialisations, reproducibly.
    """
    w = cfg.workload
    seed = cfg.experiment.seed
    if replica_id:
        seed = derive_seed(seed, "replica", replica_id) % (2**31)
    stream = build_stream(w, seed)
    host = build_host(w, stream, seed)
    mechanism = w.scalpel.mechanism
    density = None if mechanism.name == "nm" else cfg.policy.density
    scalpel = Scalpel(
        host,
        mechanism=mechanism.name,
        mechanism_params=dict(mechanism.params),
        density=density,
        distribution=w.scalpel.distribution,
        keep_dense=tuple(w.scalpel.keep_dense),
        selection=w.scalpel.selection,
        seed=seed,
    )
    if w.scalpel.rescale_init:
        named = dict(host.named_parameters())
        with torch.no_grad():
            for name in scalpel.names:
                density = scalpel.density(name)
                if 0.0 < density < 1.0:
                    named[name].mul_(density**-0.5)
    sensor_params = {
        k: tuple(v) if isinstance(v, list) else v for k, v in w.organism.sensors.items()
    }
    sensors = build(SensorConfig, {"seed": seed, **sensor_params}, "sensor config")
    loss_fn = None
    if stream.source.kind == "regression":

        def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (out.squeeze(-1) - y) ** 2

    nervous = NervousSystem(sensors, loss_fn=loss_fn)
    optimizer = make_optimizer(w.optimizer, w.lr, w.momentum, host, scalpel)
    return Organism(
        host,
        stream,
        scalpel,
        nervous,
        optimizer,
        surgery_interval=cfg.policy.surgery_interval,
        reward=cfg.reward,
        penalty_weight=w.scalpel.penalty_weight,
        spike_window=w.organism.spike_window,
        sense_batches=w.organism.sense_batches,
        run_id=run_id,
        trial_id=trial_id,
        replica_id=replica_id,
    )
