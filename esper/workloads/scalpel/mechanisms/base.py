"""The mask-mechanism contract, the :data:`MECHANISMS` registry, and the masked layer record.

A mechanism decides how a boolean *support* mask (the weights the Scalpel allows; the thing
``prune``/``regrow`` edit and densities count) enters the forward and backward passes, and what
it does between optimizer steps. Two families:

* **in-place** mechanisms keep pruned weights exactly zero in the parameter itself, so the
  forward pass is the plain dense forward, and mask the gradient in a post-accumulate hook (the
  rigl-torch design: boolean masks plus a gradient hook, which also sees the dense gradient);
* **overriding** mechanisms replace the layer's forward so it uses an effective weight
  ``w ⊙ gate`` (straight-through masks, Gumbel-softmax, Hard Concrete, unit gates).

Whatever the mechanism, a weight outside the support contributes exactly zero to every forward
pass. *Hidden-weight* mechanisms (straight-through, ATM) let pruned weights keep their stored
value and keep training on the dense "virtual" gradient (Lin et al. 2020, arXiv 2006.07253).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.hooks import RemovableHandle

from esper.registry import Registry

__all__ = ["MECHANISMS", "Layer", "MaskChange", "Mechanism"]

MECHANISMS: Registry[type[Mechanism]] = Registry("mask mechanism")

# Optimizers whose update at a weight with zero gradient, zero state and zero value is exactly
# zero (coupled or decoupled weight decay of 0 is 0). With one bound, in-place masks stay exact
# without re-multiplying the weights after every step. L-BFGS, for one, is not on this list.
_ZERO_PRESERVING: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
)


@dataclass(eq=False)
class Layer:
    """One masked weight tensor.

    Attributes:
        name: Full parameter name (``"layers.0.weight"``).
        module: The Linear or Conv module owning it.
        weight: The parameter.
        mask: Boolean support, shaped like ``weight``.
        fmask: ``mask`` as 0/1 in the weight's dtype (for multiplications).
        kept: Number of true entries of ``mask``.
        dense_grad: Dense gradient of the last captured backward pass, or ``None``.
    """

    name: str
    module: nn.Module
    weight: nn.Parameter
    mask: torch.Tensor
    fmask: torch.Tensor = field(init=False)
    kept: int = field(init=False)
    dense_grad: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.fmask = self.mask.to(self.weight.dtype)
        self.kept = int(self.mask.sum())

    @property
    def numel(self) -> int:
        """Number of weights in the tensor."""
        return self.mask.numel()

    @property
    def full(self) -> bool:
        """Whether every weight is kept."""
        return self.kept == self.numel

    def set(self, index: torch.Tensor, value: bool) -> None:
        """Set the support at flat ``index`` (distinct positions whose state changes)."""
        self.mask.view(-1)[index] = value
        self.fmask.view(-1)[index] = float(value)
        self.kept += index.numel() if value else -index.numel()

    def assign(self, mask: torch.Tensor) -> None:
        """Replace the whole support."""
        self.mask.copy_(mask)
        self.fmask.copy_(mask)
        self.kept = int(mask.sum())


@dataclass(frozen=True)
class MaskChange:
    """Support changes a mechanism made on its own (DPF regrowth, ATM, N:M re-picks).

    Attributes:
        name: Parameter name.
        pruned: Flat indices that left the support.
        regrown: Flat indices that joined it.
    """

    name: str
    pruned: torch.Tensor
    regrown: torch.Tensor


class Mechanism:
    """Base class: in-place hard masks with masked gradients.

    Subclasses set the class attributes and override the hooks they need.

    Attributes:
        hidden_weights: Pruned weights keep (and train) their stored value; the forward masks them.
        overrides_forward: The layer forward is replaced to use :meth:`effective_weight`.
        natural_density: A density the mechanism imposes (N:M), or ``None``.
    """

    hidden_weights: bool = False
    overrides_forward: bool = False
    natural_density: float | None = None

    def __init__(self) -> None:
        self.layers: dict[str, Layer] = {}
        self.model: nn.Module | None = None
        self.generator = torch.Generator()
        self.optimizer: torch.optim.Optimizer | None = None
        self.capture_dense_grad = False
        self.step = 0
        self._handles: list[RemovableHandle] = []
        self._overridden: list[nn.Module] = []

    # -- lifecycle -------------------------------------------------------------------------

    def initial_mask(
        self, weight: torch.Tensor, count: int, selection: str, generator: torch.Generator
    ) -> torch.Tensor:
        """A support with exactly ``count`` kept weights, chosen at random or by ``|w|``."""
        n = weight.numel()
        flat = torch.zeros(n, dtype=torch.bool, device=weight.device)
        if selection == "random":
            keep = torch.randperm(n, generator=generator, device=generator.device)[:count]
        elif selection == "magnitude":
            keep = torch.topk(weight.detach().abs().reshape(-1), count, sorted=False).indices
        else:
            raise ValueError(
                f"unknown selection {selection!r}; valid selections: magnitude, random"
            )
        flat[keep.to(weight.device)] = True
        return flat.view(weight.shape)

    def attach(
        self, model: nn.Module, layers: Mapping[str, Layer], generator: torch.Generator
    ) -> None:
        """Install hooks (and forward overrides) on ``model`` for ``layers``."""
        self.model = model
        self.layers = dict(layers)
        self.generator = generator
        self._setup()
        self.apply_masks()
        self._install_grad_hooks()
        for layer in self.layers.values():
            if self._overrides(layer):
                self._install_forward(layer)

    def _install_grad_hooks(self) -> None:
        for layer in self.layers.values():
            hook = partial(self._grad_hook, layer)
            self._handles.append(layer.weight.register_post_accumulate_grad_hook(hook))

    def detach(self) -> None:
        """Remove every hook and forward override; masks and state stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in self._overridden:
            delattr(module, "forward")
        self._overridden.clear()

    def _setup(self) -> None:
        """Create per-layer state; called once by :meth:`attach` before masks are applied."""

    # -- masks and weights -----------------------------------------------------------------

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero pruned weights in place (a no-op for hidden-weight mechanisms)."""
        if self.hidden_weights:
            return
        pending = [layer for layer in self.layers.values() if not layer.full]
        if pending:
            torch._foreach_mul_([p.weight for p in pending], [p.fmask for p in pending])

    def effective_weight(self, layer: Layer) -> torch.Tensor:
        """The weight the forward pass uses (the parameter itself for in-place masks)."""
        return layer.weight

    def effective_mask(self, layer: Layer) -> torch.Tensor:
        """Weights active at inference (``eval()``): the support, narrowed by any gate."""
        return layer.mask

    def squashed_weight(self, layer: Layer) -> torch.Tensor:
        """The weight to bake into the parameter when the Scalpel is removed."""
        with torch.no_grad():
            return layer.weight * layer.fmask

    def _overrides(self, layer: Layer) -> bool:
        return self.overrides_forward

    def _captures_at_param(self, layer: Layer) -> bool:
        """Whether ``weight.grad`` before masking is the dense gradient ``∂L/∂(w⊙m)``."""
        return not self._overrides(layer) or self.hidden_weights

    def _bias(self, layer: Layer) -> torch.Tensor | None:
        bias = getattr(layer.module, "bias", None)
        return bias if isinstance(bias, torch.Tensor) else None

    def _install_forward(self, layer: Layer) -> None:
        module = layer.module
        if isinstance(module, nn.Linear):
            fn: Callable[[torch.Tensor], torch.Tensor] = partial(self._linear_forward, layer)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            fn = partial(self._conv_forward, layer)
        else:  # guarded by the Scalpel
            raise TypeError(f"{layer.name}: cannot mask a {type(module).__name__}")
        setattr(module, "forward", fn)  # noqa: B010 -- instance attribute shadows the method
        self._overridden.append(module)

    def _forward_weight(self, layer: Layer) -> torch.Tensor:
        weight = self.effective_weight(layer)
        if self.capture_dense_grad and weight.requires_grad and not self._captures_at_param(layer):
            weight.register_hook(partial(self._store_dense_grad, layer))
        return weight

    def _linear_forward(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._forward_weight(layer), self._bias(layer))

    def _conv_forward(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        module = layer.module
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        out: torch.Tensor = module._conv_forward(x, self._forward_weight(layer), self._bias(layer))
        return out

    # -- gradients -------------------------------------------------------------------------

    @staticmethod
    def _store_dense_grad(layer: Layer, grad: torch.Tensor) -> None:
        layer.dense_grad = grad.detach().clone()

    def _grad_hook(self, layer: Layer, param: torch.Tensor) -> None:
        grad = param.grad
        if grad is None:
            return
        if self.capture_dense_grad and self._captures_at_param(layer):
            layer.dense_grad = grad.detach().clone()
        self.on_grad(layer, grad)

    def on_grad(self, layer: Layer, grad: torch.Tensor) -> None:
        """Called with the accumulated ``weight.grad``; in-place masks zero it off-support."""
        if not self.hidden_weights and not layer.full:
            grad.mul_(layer.fmask)

    # -- steps and surgery -----------------------------------------------------------------

    def _needs_reapply(self) -> bool:
        return not isinstance(self.optimizer, _ZERO_PRESERVING)

    def after_step(self) -> list[MaskChange]:
        """Called after ``optimizer.step()``: keep pruned weights at zero, advance schedules."""
        self.step += 1
        if not self.hidden_weights and self._needs_reapply():
            self.apply_masks()
        return []

    def check_regrow(self, layer: Layer, index: torch.Tensor) -> None:
        """Raise if regrowing ``index`` would break a structural constraint (N:M)."""

    @torch.no_grad()
    def on_prune(self, layer: Layer, index: torch.Tensor) -> None:
        """After the Scalpel removed ``index`` from the support."""
        if not self.hidden_weights:
            layer.weight.view(-1)[index] = 0

    def on_regrow(self, layer: Layer, index: torch.Tensor) -> None:
        """After the Scalpel added ``index`` to the support (values already initialised)."""

    # -- learnable parts, temperatures, penalties ------------------------------------------

    def parameters(self) -> list[torch.Tensor]:
        """Learnable tensors of the mechanism (logits, scores); add them to an optimizer."""
        return []

    def penalty(self) -> torch.Tensor:
        """A differentiable regulariser to add to the loss (expected L0 for Hard Concrete)."""
        device = next(iter(self.layers.values())).weight.device if self.layers else None
        return torch.zeros((), device=device)

    def temperature(self, name: str) -> float:
        """The temperature of ``name``; mechanisms without one raise."""
        raise ValueError(f"mechanism {type(self).__name__} has no temperature")

    def set_temperature(self, name: str, tau: float) -> None:
        """Pin the temperature of ``name`` (overrides any schedule for it)."""
        raise ValueError(f"mechanism {type(self).__name__} has no temperature")

    def heat_temperature(self, name: str, factor: float) -> bool:
        """Scale the scheduled temperature of ``name`` by ``factor`` (1: none); returns whether
        it changed."""
        raise ValueError(f"mechanism {type(self).__name__} has no temperature")

    # -- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Mechanism state (masks, generator and weights are saved by the Scalpel)."""
        return {"step": self.step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (after the Scalpel restored the masks)."""
        self.step = int(state["step"])
