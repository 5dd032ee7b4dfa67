"""Hard boolean masks: ``masked`` and ``straight_through`` gradients.

``masked`` is the classic sparse-training mask (SET, RigL; Evci et al. 2020, arXiv 1911.11134):
pruned weights are exactly zero in the parameter, get no gradient, and the forward pass is the
plain dense one, so a masked step costs little more than a dense step.

``straight_through`` is dynamic pruning with feedback (DPF; Lin et al. 2020, arXiv 2006.07253):
the forward pass uses ``w ⊙ m`` while the dense ``w`` receives the whole gradient
``∇_{w⊙m} L``, so pruned weights keep moving behind the mask and their accumulated magnitude
records how much the loss wants them back. With ``regrow_threshold`` set, a pruned weight whose
``|w|`` reaches the threshold rejoins the support at its accumulated value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from esper.workloads.scalpel.estimators import masked_straight_through
from esper.workloads.scalpel.mechanisms.base import MECHANISMS, Layer, MaskChange, Mechanism

__all__ = ["HardMask", "StraightThroughMask"]


@MECHANISMS.register("masked")
class HardMask(Mechanism):
    """Pruned weights are zero in place and receive no gradient.

    After each optimizer step the masks are re-applied, unless the bound optimizer is one whose
    update keeps a zero weight with zero gradient and zero state at zero (SGD, Adam, AdamW,
    RMSprop, ...): then the gradient hook alone keeps the mask exact and the step is cheaper.

    Args:
        reapply: ``"auto"`` (skip the re-multiplication when provably redundant) or ``"always"``.
    """

    def __init__(self, reapply: str = "auto") -> None:
        super().__init__()
        if reapply not in ("auto", "always"):
            raise ValueError(f"reapply={reapply!r} must be 'auto' or 'always'")
        self.reapply = reapply

    def _needs_reapply(self) -> bool:
        return self.reapply == "always" or super()._needs_reapply()

    @contextlib.contextmanager
    def explicit_grad_masking(self) -> Iterator[Callable[[], None]]:
        """Within the block, gradients are not masked by per-layer hooks: the caller calls
        the yielded :meth:`mask_grads` after each backward instead (one ``_foreach_mul_`` for
        every layer, the same arithmetic as the hooks; the organism's training loop does
        this). The hooks are back after the block."""
        self.detach()  # masked installs gradient hooks only, no forward overrides
        try:
            yield self.mask_grads
        finally:
            self._install_grad_hooks()

    @torch.no_grad()
    def mask_grads(self) -> None:
        """What the gradient hooks do, for every layer at once: keep the dense gradient when
        capture is on, then zero the gradient off the support."""
        layers = [layer for layer in self.layers.values() if layer.weight.grad is not None]
        if self.capture_dense_grad:
            for layer in layers:
                layer.dense_grad = layer.weight.grad.detach().clone()  # type: ignore[union-attr]
        grads: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for layer in layers:
            if not layer.full and layer.weight.grad is not None:
                grads.append(layer.weight.grad)
                masks.append(layer.fmask)
        if grads:
            torch._foreach_mul_(grads, masks)


@MECHANISMS.register("straight_through")
class StraightThroughMask(Mechanism):
    """Forward ``w ⊙ m``; the dense gradient reaches every weight (DPF, Lin et al. 2020).

    Args:
        regrow_threshold: If set, after each step every pruned weight with ``|w| ≥`` threshold
            is regrown at its hidden value. Per-layer values via :meth:`set_regrow_threshold`.
    """

    hidden_weights = True
    overrides_forward = True

    def __init__(self, regrow_threshold: float | None = None) -> None:
        super().__init__()
        if regrow_threshold is not None and regrow_threshold <= 0:
            raise ValueError(f"regrow_threshold={regrow_threshold} must be > 0 (or None)")
        self.regrow_threshold = regrow_threshold
        self._thresholds: dict[str, float | None] = {}

    def _setup(self) -> None:
        self._thresholds = {name: self.regrow_threshold for name in self.layers}

    def effective_weight(self, layer: Layer) -> torch.Tensor:
        if layer.full:
            return layer.weight
        return masked_straight_through(layer.weight, layer.fmask)

    def set_regrow_threshold(self, name: str, threshold: float | None) -> None:
        """Set (or clear with ``None``) the ``|w|`` at which pruned weights of ``name`` return."""
        if name not in self._thresholds:
            raise KeyError(f"unknown layer {name!r}; layers: {', '.join(self._thresholds)}")
        if threshold is not None and threshold <= 0:
            raise ValueError(f"threshold={threshold} must be > 0 (or None)")
        self._thresholds[name] = threshold

    @torch.no_grad()
    def after_step(self) -> list[MaskChange]:
        changes = super().after_step()
        for name, threshold in self._thresholds.items():
            layer = self.layers[name]
            if threshold is None or layer.full:
                continue
            back = (~layer.mask & (layer.weight.abs() >= threshold)).view(-1).nonzero().view(-1)
            if back.numel():
                layer.set(back, True)
                changes.append(MaskChange(name, back[:0], back))
        return changes

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "thresholds": dict(self._thresholds)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._thresholds = dict(state["thresholds"])
