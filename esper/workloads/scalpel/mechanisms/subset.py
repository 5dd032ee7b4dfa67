"""Differentiable Subset Pruning of structured units: keep exactly ``K`` heads/neurons/channels.

Li, Cotterell & Sachan (2021, "Differentiable Subset Pruning of Transformer Heads",
arXiv 2108.04657) give every unit ``h`` of a group a learnable log-importance ``s_h = log i_h``,
perturb it with Gumbel noise ``r_h = s_h + g_h`` and keep the top ``K`` perturbed units — an
exact sample of ``K`` units without replacement (Gumbel-top-k). The gradient flows through the
relaxed top-k of Xie & Ermon (2019) computed on the same perturbed scores, straight-through:
the forward gate is the exact ``K``-hot vector. At test time the ``K`` best scores are kept.

Attention heads are gated through ``MultiHeadSelfAttention.head_gate``; neurons and channels by
scaling the rows of their weight and their bias, so a dropped unit outputs exactly zero.
The weight-level support is an in-place hard mask (as ``masked``) on top of the unit gates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from esper.workloads.hosts import MultiHeadSelfAttention, UnitGroup
from esper.workloads.scalpel.estimators import gumbel_noise, straight_through
from esper.workloads.scalpel.mechanisms.base import MECHANISMS, Layer
from esper.workloads.scalpel.mechanisms.hard import HardMask
from esper.workloads.scalpel.mechanisms.tempered import Temperatures, TemperedMechanism
from esper.workloads.scalpel.selection import relaxed_topk

__all__ = ["SubsetMask"]

_KINDS = ("head", "neuron", "channel")


@MECHANISMS.register("gumbel_topk")
class SubsetMask(TemperedMechanism, HardMask):
    """Exactly ``K`` units kept per group by Gumbel-top-k, with a relaxed gradient.

    Groups come from the host's ``unit_groups()``: every attention module for ``head``; every
    Linear (``neuron``) or Conv (``channel``) whose weight the Scalpel masks, except layers
    inside attention modules and the network's last masked layer (its outputs are the
    predictions).

    Args:
        kinds: Unit kinds to gate; default ``("head",)`` if the host has attention, else
            ``("neuron", "channel")``.
        keep: Fraction of each group's units kept at first (at least one).
        tau: Temperature of the relaxed top-k (per group via ``set_temperature(group, τ)``).
        schedule: Annealing schedule name, or ``None`` for a constant ``tau``.
        schedule_params: Its parameters.
        hard: Exact ``K``-hot forward with straight-through gradient (``True``), or the
            relaxed soft ``K``-hot forward (``False``).
    """

    def __init__(
        self,
        kinds: Sequence[str] | None = None,
        keep: float = 0.5,
        tau: float = 1.0,
        schedule: str | None = None,
        schedule_params: Mapping[str, Any] | None = None,
        hard: bool = True,
    ) -> None:
        super().__init__()
        if kinds is not None:
            bad = [k for k in kinds if k not in _KINDS]
            if bad:
                raise ValueError(f"unknown unit kind {bad[0]!r}; valid kinds: {', '.join(_KINDS)}")
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep={keep} must lie in (0, 1]")
        self.kinds = tuple(kinds) if kinds is not None else None
        self.keep, self.hard = keep, hard
        self.temperatures = Temperatures(tau, schedule, schedule_params)
        self.groups: dict[str, UnitGroup] = {}
        self.scores: dict[str, torch.Tensor] = {}
        self.k: dict[str, int] = {}
        self._gated_layers: dict[str, str] = {}  # layer name -> group name (neurons/channels)

    def _setup(self) -> None:
        model = self.model
        unit_groups = getattr(model, "unit_groups", None)
        if model is None or unit_groups is None:
            raise TypeError("mechanism 'gumbel_topk' needs a host with unit_groups() (esper Host)")
        groups: list[UnitGroup] = unit_groups()
        attention = [g.module for g in groups if g.kind == "head"]
        kinds = self.kinds or (("head",) if attention else ("neuron", "channel"))
        last = list(self.layers)[-1]
        for group in groups:
            if group.kind not in kinds:
                continue
            if group.kind != "head":
                weight = f"{group.module}.weight"
                inside = any(group.module.startswith(f"{a}.") for a in attention)
                if weight not in self.layers or weight == last or inside:
                    continue
                self._gated_layers[weight] = group.module
            self.groups[group.module] = group
        if not self.groups:
            raise ValueError(f"mechanism 'gumbel_topk' found no units of kinds {kinds} to gate")
        for name, group in self.groups.items():
            device = next(iter(self.layers.values())).weight.device
            self.scores[name] = torch.zeros(group.count, device=device, requires_grad=True)
            self.k[name] = max(1, round(self.keep * group.count))
            if group.kind == "head":
                module = model.get_submodule(name)
                assert isinstance(module, MultiHeadSelfAttention)
                self._handles.append(module.register_forward_pre_hook(self._head_pre_hook(name)))
                self._handles.append(module.register_forward_hook(self._head_post_hook))
        self.temperatures.add(self.groups)

    # -- unit gates ------------------------------------------------------------------------

    def unit_gate(self, group: str, training: bool = False) -> torch.Tensor:
        """The ``K``-hot gate of ``group``: sampled (``training``) or the top ``K`` scores."""
        scores, k = self.scores[group], self.k[group]
        if not training:
            gate = torch.zeros_like(scores.detach())
            return gate.index_fill_(0, torch.topk(scores.detach(), k).indices, 1.0)
        perturbed = scores + gumbel_noise(scores.shape, self.generator, scores.device, scores.dtype)
        soft = relaxed_topk(perturbed, k, self.temperatures.get(group), noise=False)
        if not self.hard:
            return soft
        hard = torch.zeros_like(soft, dtype=torch.bool)
        hard[torch.topk(perturbed.detach(), k).indices] = True
        return straight_through(hard, soft)

    def set_k(self, group: str, k: int) -> None:
        """Keep exactly ``k`` units of ``group`` from the next forward pass on."""
        count = self.groups[group].count if group in self.groups else None
        if count is None:
            raise KeyError(f"unknown unit group {group!r}; groups: {', '.join(self.groups)}")
        if not 1 <= k <= count:
            raise ValueError(f"k={k} for {group!r} must lie in [1, {count}]")
        self.k[group] = int(k)

    def _head_pre_hook(self, group: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            module.head_gate = self.unit_gate(group, training=module.training)

        return hook

    @staticmethod
    def _head_post_hook(module: nn.Module, args: Any, output: Any) -> None:
        gate = module.head_gate
        assert isinstance(gate, torch.Tensor)
        module.head_gate = gate.detach()

    def _overrides(self, layer: Layer) -> bool:
        return layer.name in self._gated_layers

    def _captures_at_param(self, layer: Layer) -> bool:
        return not self._overrides(layer)

    def _row_gate(self, layer: Layer) -> torch.Tensor:
        gate = self.unit_gate(self._gated_layers[layer.name], training=layer.module.training)
        return gate

    def _linear_forward(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        return self._gated_forward(layer, x)

    def _conv_forward(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        return self._gated_forward(layer, x)

    def _gated_forward(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        gate = self._row_gate(layer)
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        weight = layer.weight * gate.view(shape)
        if self.capture_dense_grad and weight.requires_grad:
            weight.register_hook(lambda g, layer=layer: self._store_dense_grad(layer, g))
        bias = self._bias(layer)
        bias = bias * gate if bias is not None else None
        module = layer.module
        if isinstance(module, nn.Linear):
            return nn.functional.linear(x, weight, bias)
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        out: torch.Tensor = module._conv_forward(x, weight, bias)
        return out

    # -- masks -----------------------------------------------------------------------------

    def effective_mask(self, layer: Layer) -> torch.Tensor:
        mask = layer.mask.clone()
        for name, group in self.groups.items():
            dropped = (self.unit_gate(name) == 0).nonzero().view(-1).tolist()
            for unit in dropped:
                for param, (dim, cut) in group.index(unit).items():
                    if param == layer.name:
                        mask.narrow(dim, cut.start, cut.stop - cut.start).fill_(False)
        return mask

    def squashed_weight(self, layer: Layer) -> torch.Tensor:
        with torch.no_grad():
            return layer.weight * self.effective_mask(layer)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.scores.values())

    def detach(self) -> None:
        super().detach()
        for name, group in self.groups.items():
            if group.kind == "head" and self.model is not None:
                module = self.model.get_submodule(name)
                module.head_gate = self.unit_gate(name).detach()  # the test-time heads

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "scores": {n: s.detach().clone() for n, s in self.scores.items()},
            "k": dict(self.k),
            "temperatures": self.temperatures.state_dict(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for name, value in state["scores"].items():
            self.scores[name].copy_(value)
        self.k = {n: int(k) for n, k in state["k"].items()}
        self.temperatures.load_state_dict(state["temperatures"])
