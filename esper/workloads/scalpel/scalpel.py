"""The Scalpel: masked prunable tensors of a host network and the surgery applied to them.

Lifecycle, as torch's sparsifier (``prepare → step → squash``)::

    scalpel = Scalpel(model, "masked", density=0.1, distribution="erk", seed=0)
    opt = torch.optim.SGD([*model.parameters(), *scalpel.parameters()], lr=0.1, momentum=0.9)
    scalpel.bind_optimizer(opt)
    for batch in stream:
        opt.zero_grad()
        loss = loss_fn(model(x), y) + lam * scalpel.penalty()
        loss.backward()
        opt.step()
        changes = scalpel.after_step()          # after EVERY optimizer.step()
    scalpel.prune(name, flat_indices); scalpel.regrow(name, flat_indices, init="zero")
    scalpel.squash()                            # bake the masks into the weights

The Scalpel owns one boolean *support* per prunable tensor; how the support enters the forward
and backward passes is the mechanism's business (:data:`MECHANISMS`). Every surgery returns how
many weights actually changed state and resets the bound optimizer's per-weight state there.

Devices: masks, gates and every other per-weight tensor live on the model's device. The random
stream (:attr:`Scalpel.generator`, shared with the mechanism) is a CPU ``torch.Generator``:
random draws (initial supports, gate noise, regrowth values) are made on the CPU and moved to the
device, so a CPU run and a CUDA run from the same seed draw identical numbers. Index tensors
given to :meth:`Scalpel.prune` and :meth:`Scalpel.regrow` may live on any device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from esper.registry import build
from esper.seeding import derive_seed
from esper.workloads.scalpel.allocation import allocate
from esper.workloads.scalpel.flops import FlopReport, flops
from esper.workloads.scalpel.mechanisms import MECHANISMS, Layer, MaskChange, Mechanism
from esper.workloads.scalpel.mechanisms.hard import HardMask
from esper.workloads.scalpel.mechanisms.nm_mask import NMMask
from esper.workloads.scalpel.regrowth import REGROW_INITS, regrow_values, reset_optimizer_state
from esper.workloads.scalpel.targets import resolve_targets

__all__ = ["Scalpel"]

M = TypeVar("M", bound=Mechanism)

_VERSION = 1


class Scalpel:
    """Masks on a model's prunable tensors, a mask mechanism, and surgery on them.

    Args:
        model: The host network (an :class:`esper.workloads.hosts.Host`, or any module if
            ``params`` is given).
        mechanism: A name in :data:`MECHANISMS`: ``masked``, ``straight_through``,
            ``gumbel_softmax``, ``hard_concrete``, ``gumbel_topk``, ``nm``, ``atm``.
        mechanism_params: Its keyword arguments (unknown ones are an error).
        density: Initial global density, parameter-weighted over every masked tensor; ``None``
            for the mechanism's natural density (``N/M`` for ``nm``, else 1.0).
        distribution: How the budget is spread over layers: ``uniform`` or ``erk``.
        params: Tensors to mask, ``{full name: weight}``; default ``model.prunable_parameters()``.
            Only weights of Linear, Conv1d and Conv2d modules.
        keep_dense: Names among ``params`` kept fully dense (counted in the global density).
        selection: Initial supports drawn ``random`` (RigL, SET) or by ``magnitude``.
        seed: Root seed of the Scalpel's random stream (initial masks, noise, regrowth init), a
            CPU generator whatever the model's device.
        reset_optimizer_state: Zero the bound optimizer's per-weight state at touched weights.

    Raises:
        esper.registry.UnknownNameError: unknown mechanism or distribution.
        esper.registry.InvalidParameterError: a mechanism parameter it does not accept.
        ValueError: bad density, a parameter that is not a Linear/Conv weight, and so on.
    """

    def __init__(
        self,
        model: nn.Module,
        mechanism: str = "masked",
        mechanism_params: Mapping[str, Any] | None = None,
        density: float | None = None,
        distribution: str = "uniform",
        params: Mapping[str, nn.Parameter] | None = None,
        keep_dense: Sequence[str] = (),
        selection: str = "random",
        seed: int = 0,
        reset_optimizer_state: bool = True,
    ) -> None:
        self.model = model
        self.mechanism_name = mechanism
        self.mechanism: Mechanism = build(
            MECHANISMS[mechanism], mechanism_params or {}, f"mask mechanism {mechanism!r}"
        )
        natural = self.mechanism.natural_density
        if natural is not None and density is not None and not math.isclose(density, natural):
            raise ValueError(
                f"mechanism {mechanism!r} fixes the density at {natural:g}; omit density "
                f"(got {density})"
            )
        self.target_density = density if density is not None else (natural or 1.0)
        self.reset_state = reset_optimizer_state
        self.optimizer: torch.optim.Optimizer | None = None
        params, modules = resolve_targets(model, params)
        self.generator = torch.Generator()  # on the CPU, whatever the model's device
        self.generator.manual_seed(derive_seed(seed, "scalpel", mechanism))
        shapes = {n: tuple(p.shape) for n, p in params.items()}
        density_for_counts = self.target_density if natural is None else 1.0
        counts = allocate(shapes, density_for_counts, distribution, keep_dense)
        self._layers: dict[str, Layer] = {}
        for name, weight in params.items():
            mask = self.mechanism.initial_mask(weight, counts[name], selection, self.generator)
            self._layers[name] = Layer(name, modules[name], weight, mask)
        self.mechanism.attach(model, self._layers, self.generator)

    def mechanism_as(self, kind: type[M]) -> M:
        """The mechanism, typed as ``kind`` for its own methods (``set_k``, ``observe``, ...);
        ``TypeError`` if it is not a ``kind``."""
        if not isinstance(self.mechanism, kind):
            raise TypeError(
                f"this Scalpel's mechanism is {self.mechanism_name!r} "
                f"({type(self.mechanism).__name__}), not a {kind.__name__}"
            )
        return self.mechanism

    # -- reading masks ---------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Masked parameter names, in forward order."""
        return list(self._layers)

    def _layer(self, name: str) -> Layer:
        try:
            return self._layers[name]
        except KeyError:
            raise KeyError(f"unknown layer {name!r}; layers: {', '.join(self._layers)}") from None

    def mask(self, name: str) -> torch.Tensor:
        """The boolean support of ``name`` (a live view: do not modify; use prune/regrow)."""
        return self._layer(name).mask

    def masks(self) -> dict[str, torch.Tensor]:
        """Every support, by name."""
        return {n: layer.mask for n, layer in self._layers.items()}

    def effective_mask(self, name: str) -> torch.Tensor:
        """Weights active at inference: the support narrowed by deterministic gates."""
        return self.mechanism.effective_mask(self._layer(name))

    def effective_masks(self) -> dict[str, torch.Tensor]:
        """:meth:`effective_mask` of every layer."""
        return {n: self.mechanism.effective_mask(layer) for n, layer in self._layers.items()}

    def numel(self, name: str) -> int:
        """Number of weights of ``name``."""
        return self._layer(name).numel

    def density(self, name: str) -> float:
        """Fraction of ``name``'s weights in the support."""
        layer = self._layer(name)
        return layer.kept / layer.numel

    def densities(self) -> dict[str, float]:
        """:meth:`density` of every layer."""
        return {n: layer.kept / layer.numel for n, layer in self._layers.items()}

    def global_density(self) -> float:
        """Kept weights over all masked weights (parameter-weighted)."""
        kept = sum(layer.kept for layer in self._layers.values())
        return kept / sum(layer.numel for layer in self._layers.values())

    def flops(self, input_shape: Sequence[int]) -> FlopReport:
        """MACs per example under :meth:`effective_masks` (see :func:`flops`)."""
        return flops(self.model, input_shape, self.effective_masks())

    # -- surgery ---------------------------------------------------------------------------

    def _indices(self, layer: Layer, flat_indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(flat_indices, dtype=torch.long, device=layer.mask.device).view(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= layer.numel):
            raise IndexError(
                f"flat indices of {layer.name!r} must lie in [0, {layer.numel}); "
                f"got [{int(idx.min())}, {int(idx.max())}]"
            )
        return torch.unique(idx)

    def _reset(self, layer: Layer, index: torch.Tensor) -> None:
        if self.reset_state and self.optimizer is not None:
            reset_optimizer_state(self.optimizer, layer.weight, index)

    @torch.no_grad()
    def prune(self, name: str, flat_indices: torch.Tensor | Sequence[int]) -> int:
        """Remove ``flat_indices`` of ``name`` from the support.

        Returns:
            How many of them were in the support (duplicates count once).
        """
        layer = self._layer(name)
        idx = self._indices(layer, flat_indices)
        changed = idx[layer.mask.view(-1)[idx]]
        if changed.numel():
            layer.set(changed, False)
            self.mechanism.on_prune(layer, changed)
            self._reset(layer, changed)
        return int(changed.numel())

    @torch.no_grad()
    def regrow(
        self, name: str, flat_indices: torch.Tensor | Sequence[int], init: str = "zero"
    ) -> int:
        """Add ``flat_indices`` of ``name`` to the support, initialised by ``init``.

        Args:
            name: Layer.
            flat_indices: Positions in ``weight.view(-1)``.
            init: A name in :data:`REGROW_INITS`: ``zero`` (RigL), ``keep``, ``kaiming``,
                ``small_random``.

        Returns:
            How many of them were outside the support (duplicates count once).
        """
        REGROW_INITS[init]  # unknown names fail before anything changes
        layer = self._layer(name)
        idx = self._indices(layer, flat_indices)
        changed = idx[~layer.mask.view(-1)[idx]]
        if changed.numel():
            self.mechanism.check_regrow(layer, changed)
            values = regrow_values(init, layer.weight, changed, self.generator)
            layer.weight.view(-1)[changed] = values
            layer.set(changed, True)
            self.mechanism.on_regrow(layer, changed)
            self._reset(layer, changed)
        return int(changed.numel())

    def bind_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Reset ``optimizer``'s per-weight state on surgery; zero it now at pruned weights."""
        self.optimizer = optimizer
        self.mechanism.optimizer = optimizer
        if self.mechanism.hidden_weights or not self.reset_state:
            return
        for layer in self._layers.values():
            if not layer.full:
                self._reset(layer, (~layer.mask).view(-1).nonzero().view(-1))

    def after_step(self) -> list[MaskChange]:
        """Call after every ``optimizer.step()``.

        Re-applies in-place masks where needed, advances temperature schedules and step
        counters, and runs the mechanism's own mask dynamics (DPF threshold regrowth, ATM
        updates, N:M re-picks), whose changes are returned for the event log.
        """
        return self.mechanism.after_step()

    def block_pattern(self, name: str) -> tuple[int, int] | None:
        """``(N, M)`` if regrowth in ``name`` must keep at most ``N`` of every ``M``
        consecutive weights (the ``nm`` mechanism), else ``None``."""
        mechanism = self.mechanism
        if isinstance(mechanism, NMMask) and name not in mechanism.dense_layers:
            return mechanism.n, mechanism.m
        return None

    @contextlib.contextmanager
    def explicit_grad_masking(self) -> Iterator[Callable[[], None] | None]:
        """For hard in-place masks (``masked``): within the block, one masking call after each
        backward replaces the per-layer gradient hooks; yields that call (run it between
        backward and the optimizer step), or ``None`` for mechanisms that keep their hooks."""
        if not isinstance(self.mechanism, HardMask):
            yield None
            return
        with self.mechanism.explicit_grad_masking() as mask_grads:
            yield mask_grads

    def apply_masks(self) -> None:
        """Zero pruned weights in place now (after editing weights by hand)."""
        self.mechanism.apply_masks()

    # -- gradients, temperatures, learnable parts ------------------------------------------

    @property
    def capture_dense_grad(self) -> bool:
        """Whether backward passes record the dense gradient for :meth:`dense_grad`."""
        return self.mechanism.capture_dense_grad

    @capture_dense_grad.setter
    def capture_dense_grad(self, value: bool) -> None:
        self.mechanism.capture_dense_grad = bool(value)

    @contextlib.contextmanager
    def dense_grads(self) -> Iterator[None]:
        """Capture dense gradients for the backward passes inside the ``with`` block."""
        previous = self.capture_dense_grad
        self.capture_dense_grad = True
        try:
            yield
        finally:
            self.capture_dense_grad = previous

    def record_dense_grad(self, name: str, grad: torch.Tensor) -> None:
        """Set the dense gradient of ``name`` as a backward with capture on would have (a
        :class:`~esper.workloads.cohort.Cohort` computes its members' gradients together)."""
        self._layer(name).dense_grad = grad.detach().clone()

    def dense_grad(self, name: str) -> torch.Tensor:
        """``∂L/∂(effective weight)`` of the last captured backward, pruned positions included.

        Raises:
            RuntimeError: no backward pass ran with capture on.
        """
        grad = self._layer(name).dense_grad
        if grad is None:
            raise RuntimeError(
                f"no dense gradient captured for {name!r}: run the backward pass inside "
                f"`with scalpel.dense_grads():` (or set scalpel.capture_dense_grad = True)"
            )
        return grad

    def temperature(self, name: str) -> float:
        """The mechanism's temperature for ``name`` (a layer, or a unit group for DSP)."""
        return self.mechanism.temperature(name)

    def set_temperature(self, name: str, tau: float) -> None:
        """Pin the temperature of ``name``; ``ValueError`` if the mechanism has none."""
        self.mechanism.set_temperature(name, tau)

    def heat_temperature(self, name: str, factor: float) -> bool:
        """Its configured temperature × ``factor`` (1: back to it); whether it changed."""
        return self.mechanism.heat_temperature(name, factor)

    def parameters(self) -> list[torch.Tensor]:
        """The mechanism's learnable tensors (give them to the optimizer with the model's)."""
        return self.mechanism.parameters()

    def penalty(self) -> torch.Tensor:
        """The mechanism's regulariser (expected L0 for ``hard_concrete``, else 0)."""
        return self.mechanism.penalty()

    # -- lifecycle -------------------------------------------------------------------------

    @torch.no_grad()
    def squash(self) -> None:
        """Bake the inference-time masked weights into the parameters and remove all hooks."""
        for layer in self._layers.values():
            layer.weight.copy_(self.mechanism.squashed_weight(layer))
        self.mechanism.detach()

    def remove(self) -> None:
        """Remove hooks and forward overrides, leaving the weights as they are."""
        self.mechanism.detach()

    def state_dict(self) -> dict[str, Any]:
        """Supports, random stream, captured dense gradients and mechanism state."""
        return {
            "version": _VERSION,
            "mechanism": self.mechanism_name,
            "masks": {n: layer.mask.clone() for n, layer in self._layers.items()},
            "dense_grads": {
                n: layer.dense_grad.clone()
                for n, layer in self._layers.items()
                if layer.dense_grad is not None
            },
            "generator": self.generator.get_state(),
            "capture_dense_grad": self.capture_dense_grad,
            "mechanism_state": self.mechanism.state_dict(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into this Scalpel (same model layout and mechanism).

        Raises:
            ValueError: the checkpoint is for another mechanism or other tensors.
        """
        if state.get("version") != _VERSION:
            raise ValueError(f"Scalpel checkpoint version {state.get('version')} != {_VERSION}")
        if state["mechanism"] != self.mechanism_name:
            raise ValueError(
                f"checkpoint is for mechanism {state['mechanism']!r}, "
                f"this Scalpel uses {self.mechanism_name!r}"
            )
        masks = state["masks"]
        if list(masks) != self.names:
            raise ValueError(f"checkpoint masks {list(masks)} != this Scalpel's {self.names}")
        for name, mask in masks.items():
            layer = self._layers[name]
            if mask.shape != layer.mask.shape:
                raise ValueError(f"{name}: mask shape {tuple(mask.shape)} != {layer.mask.shape}")
            layer.assign(mask.to(layer.mask.device))
            grad = state["dense_grads"].get(name)
            layer.dense_grad = grad.to(layer.weight.device, copy=True) if grad is not None else None
        self.generator.set_state(state["generator"])
        self.capture_dense_grad = bool(state["capture_dense_grad"])
        self.mechanism.load_state_dict(state["mechanism_state"])
        self.mechanism.apply_masks()
