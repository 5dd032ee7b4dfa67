"""N:M pattern masks: at most ``N`` kept weights in every block of ``M`` (2:4 by default).

The pattern is chosen per block by a score (``|w|`` at construction; any score through
:meth:`NMMask.repick`). Pruning inside a pattern is always valid; a regrowth that would put more
than ``N`` weights in a block is refused. With ``gradient="straight_through"`` the pruned
weights keep training on the dense gradient and, every ``update_interval`` steps, each block
re-picks its ``N`` largest ``|w|`` — SR-STE's recipe for learning N:M masks from scratch
(Zhou et al. 2021, arXiv 2102.04010, without its decay term). Tensors whose rows do not split
into blocks of ``M`` are left dense (``skip_incompatible``) and listed in ``dense_layers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from esper.workloads.scalpel.estimators import masked_straight_through
from esper.workloads.scalpel.mechanisms.base import MECHANISMS, Layer, MaskChange, Mechanism
from esper.workloads.scalpel.nm import nm_compatible, nm_mask, nm_violations

__all__ = ["NMMask"]


@MECHANISMS.register("nm")
class NMMask(Mechanism):
    """N:M structured masks, ``masked`` or ``straight_through`` gradients.

    Args:
        n: Kept weights per block.
        m: Block length along each row of the weight (``in · kernel``).
        gradient: ``"masked"`` (pruned weights zero, no gradient) or ``"straight_through"``.
        update_interval: Re-pick every block by ``|w|`` every this many steps (0: never).
            Meaningful with straight-through gradients, where pruned weights keep moving.
        skip_incompatible: Leave tensors whose rows are not a multiple of ``m`` dense; if
            false they are an error.
    """

    def __init__(
        self,
        n: int = 2,
        m: int = 4,
        gradient: str = "masked",
        update_interval: int = 0,
        skip_incompatible: bool = True,
    ) -> None:
        super().__init__()
        if not (isinstance(n, int) and isinstance(m, int) and 0 < n <= m):
            raise ValueError(f"N:M needs integers 0 < n ≤ m, got n={n}, m={m}")
        if gradient not in ("masked", "straight_through"):
            raise ValueError(f"gradient={gradient!r} must be 'masked' or 'straight_through'")
        if update_interval < 0:
            raise ValueError(f"update_interval={update_interval} must be ≥ 0")
        self.n, self.m = n, m
        self.gradient = gradient
        self.update_interval = update_interval
        self.skip_incompatible = skip_incompatible
        self.natural_density = n / m
        self.dense_layers: list[str] = []
        self.hidden_weights = gradient == "straight_through"
        self.overrides_forward = self.hidden_weights

    def initial_mask(
        self, weight: torch.Tensor, count: int, selection: str, generator: torch.Generator
    ) -> torch.Tensor:
        if nm_compatible(tuple(weight.shape), self.m):
            return nm_mask(weight.detach().abs(), self.n, self.m)
        if not self.skip_incompatible:
            raise ValueError(
                f"a weight of shape {tuple(weight.shape)} has rows that are not a multiple of "
                f"m={self.m}; exclude it from the Scalpel or set skip_incompatible=True"
            )
        return torch.ones_like(weight, dtype=torch.bool)

    def _setup(self) -> None:
        self.dense_layers = [
            name
            for name, layer in self.layers.items()
            if not nm_compatible(tuple(layer.weight.shape), self.m)
        ]

    def effective_weight(self, layer: Layer) -> torch.Tensor:
        if layer.full:
            return layer.weight
        return masked_straight_through(layer.weight, layer.fmask)

    def check_regrow(self, layer: Layer, index: torch.Tensor) -> None:
        if layer.name in self.dense_layers:
            return
        proposal = layer.mask.clone()
        proposal.view(-1)[index] = True
        bad = nm_violations(proposal, self.n, self.m)
        if bad:
            raise ValueError(
                f"regrowing {index.numel()} weights of {layer.name!r} would leave {bad} blocks "
                f"with more than {self.n} of {self.m} kept; prune inside those blocks first"
            )

    @torch.no_grad()
    def repick(self, name: str, scores: torch.Tensor | None = None) -> MaskChange:
        """Re-choose every block's ``N`` survivors of ``name`` by ``scores`` (default ``|w|``).

        Weights that leave the pattern are zeroed with masked gradients; weights that join it
        keep their (hidden) value. Returns the change.
        """
        layer = self.layers[name]
        if name in self.dense_layers:
            empty = torch.empty(0, dtype=torch.long, device=layer.mask.device)
            return MaskChange(name, empty, empty)
        score = layer.weight.abs() if scores is None else scores
        new = nm_mask(score, self.n, self.m)
        pruned = (layer.mask & ~new).view(-1).nonzero().view(-1)
        regrown = (~layer.mask & new).view(-1).nonzero().view(-1)
        layer.assign(new)
        if not self.hidden_weights:
            layer.weight.view(-1)[pruned] = 0
        return MaskChange(name, pruned, regrown)

    def after_step(self) -> list[MaskChange]:
        changes = super().after_step()
        if self.update_interval and self.step % self.update_interval == 0:
            for name in self.layers:
                change = self.repick(name)
                if change.pruned.numel() or change.regrown.numel():
                    changes.append(change)
        return changes

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "n": self.n, "m": self.m}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if (state["n"], state["m"]) != (self.n, self.m):
            raise ValueError(
                f"checkpoint holds {state['n']}:{state['m']} masks, this mechanism is "
                f"{self.n}:{self.m}"
            )
        super().load_state_dict(state)
