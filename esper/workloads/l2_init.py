"""L2 Init: regularisation toward the initial parameters, on any optimizer.

Kumar, Marklund & Van Roy, "Maintaining Plasticity in Continual Learning via Regenerative
Regularization" (CoLLAs 2024, arXiv 2308.11958) add ``λ‖θ − θ₀‖²₂`` to the loss, ``θ₀`` the
parameters at initialisation: weights drift back toward the point where the network was
plastic, at a rate set by one hyperparameter ``λ`` (swept over 1e-2 … 1e-5 in the paper).

:class:`L2Init` adds the term's gradient ``2λ(θ − θ₀)`` to each parameter's gradient just before
the optimizer updates (a step pre-hook of the optimizer), which is exactly the gradient of the
regularised loss: SGD, Adam and UPGD all see it as part of ``g`` (Adam normalises it, as any
loss term). The lean SGD step (:func:`esper.workloads.sgd.sgd_step`) steps aside for an
optimizer with step hooks, so it never skips the term.

On a sparse host the term is applied on each masked tensor's support only, so a pruned weight
keeps its zero gradient (and an in-place mask stays exact). A weight that joins the support
(regrowth) is anchored at its value when it joins: zero under RigL's regrowth, the fresh draw
under ``kaiming``. It is noticed at the next step by comparing the support with the one seen
last. A unit reset (CBP, ReDo) keeps its anchors: ``θ₀`` is the organism's initialisation.

``θ₀`` and the supports seen last travel inside the optimizer's ``state_dict`` (key
``"l2_init"``), so an organism's checkpoint resumes exactly; ``λ`` comes from the config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["STATE_KEY", "L2Init"]

STATE_KEY = "l2_init"
"""Key of L2 Init's state in the optimizer's ``state_dict``."""


class L2Init:
    """Attach L2 Init to ``optimizer``: ``2λ(θ − θ₀)`` joins the gradient before each step.

    ``θ₀`` is read now: build it once the parameters hold their initial values (after the
    Scalpel masked them and the sparsity-aware rescaling, as the factory does).

    Args:
        optimizer: The optimizer stepping ``params``.
        params: The regularised parameters by name (the host's).
        strength: ``λ > 0``.
        supports: Boolean support of each masked parameter, by name (live views, updated in
            place by surgery: :meth:`Scalpel.mask`); the others are regularised in full.

    Raises:
        ValueError: ``λ`` not a finite number > 0, or a support of the wrong shape or name.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: Mapping[str, torch.Tensor],
        strength: float,
        supports: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if not (math.isfinite(strength) and strength > 0):
            raise ValueError(f"L2 Init's strength λ={strength} must be a finite number > 0")
        supports = dict(supports or {})
        for name, support in supports.items():
            if name not in params or support.shape != params[name].shape:
                raise ValueError(f"L2 Init: support {name!r} matches no parameter of its shape")
        self.strength = float(strength)
        self.params = dict(params)
        self.supports = supports
        self.anchors = {n: p.detach().clone() for n, p in self.params.items()}
        self.seen = {n: s.clone() for n, s in supports.items()}
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_state_dict_post_hook(self._save),
            optimizer.register_load_state_dict_pre_hook(self._load),
        ]

    @torch.no_grad()
    def add_gradient(self) -> None:
        """Add ``2λ(θ − θ₀)`` to every gradient (on the support of masked tensors), first
        anchoring weights that joined a support since the last call at their current value."""
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        anchors: list[torch.Tensor] = []
        for name, p in self.params.items():
            grad = p.grad
            if grad is None:
                continue
            anchor = self.anchors[name]
            support = self.supports.get(name)
            if support is None:
                params.append(p)
                grads.append(grad)
                anchors.append(anchor)
                continue
            seen = self.seen[name]
            anchor.copy_(torch.where(support & ~seen, p, anchor))
            seen.copy_(support)
            grad.add_(torch.where(support, p - anchor, 0.0), alpha=2.0 * self.strength)
        if params:
            diffs = torch._foreach_sub(params, anchors)
            torch._foreach_add_(grads, diffs, alpha=2.0 * self.strength)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.add_gradient()

    def state_dict(self) -> dict[str, Any]:
        """``θ₀`` and the supports seen last, by parameter name."""
        return {
            "anchors": {n: t.clone() for n, t in self.anchors.items()},
            "seen": {n: t.clone() for n, t in self.seen.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (onto the parameters' devices).

        Raises:
            ValueError: the anchors are for other parameters.
        """
        for key, mine in (("anchors", self.anchors), ("seen", self.seen)):
            saved = state[key]
            if list(saved) != list(mine):
                raise ValueError(f"L2 Init {key} for {list(saved)}, this host has {list(mine)}")
            for name, tensor in saved.items():
                mine[name].copy_(tensor)

    def _save(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        state[STATE_KEY] = self.state_dict()

    def _load(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        if STATE_KEY not in state:
            raise ValueError(
                "the optimizer state has no L2 Init anchors (saved without workload.l2_init?); "
                "resume with the config it was saved with"
            )
        self.load_state_dict(state.pop(STATE_KEY))
        return state

    def detach(self) -> None:
        """Remove the hooks: the optimizer steps without L2 Init from now on."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
