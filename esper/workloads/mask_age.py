"""How long each weight's mask state has held: the ``age`` score of pruning criteria."""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["MaskAge"]


class MaskAge:
    """Per weight of each prunable tensor, the surgery at which its mask state last changed.

    Args:
        sizes: Weights per tensor, by name.
        device: Where the counters live (the host's device).
    """

    def __init__(self, sizes: Mapping[str, int], device: torch.device) -> None:
        self.device = device
        self._changed_at = {
            n: torch.zeros(size, dtype=torch.int64, device=device) for n, size in sizes.items()
        }

    def touch(self, name: str, indices: torch.Tensor, surgery: int) -> None:
        """Weights ``indices`` (flat) of ``name`` changed state at ``surgery``."""
        self._changed_at[name][indices.reshape(-1)] = surgery

    def age(self, name: str, surgery: int) -> torch.Tensor:
        """Surgeries since each weight of ``name`` last changed state, as of ``surgery``."""
        return surgery - self._changed_at[name]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The change surgeries per tensor."""
        return {n: t.clone() for n, t in self._changed_at.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output (moved to this tracker's device)."""
        self._changed_at = {n: t.clone().to(self.device) for n, t in state.items()}
