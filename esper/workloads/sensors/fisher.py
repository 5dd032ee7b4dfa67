"""Fisher history and the Fisher-guided selective forgetting (FGSF) trigger.

The trace of the empirical Fisher tracks how much a network's output depends on its weights.
Early in learning it rises; when it then *saturates* while the gradient signal-to-noise
ratio *falls*, the network has stopped gaining information yet its gradients are turning to
noise: premature rigidification, the signature of primacy bias (Nikishin et al. 2022, "The
Primacy Bias in Deep Reinforcement Learning", ICML, arXiv 2205.07802; Achille, Rovere &
Soatto 2019, "Critical Learning Periods in Deep Networks", ICLR, arXiv 1711.08856, for the
Fisher-trace rise and plateau). :class:`FGSFTrigger` watches the :class:`FisherHistory` of
every layer and of the whole network and fires when, over the last ``window`` readings,

- the Fisher trace has **risen**: its value at the window start is at least
  ``1 + min_rise`` times the smallest value before it;
- it has **saturated**: ``(max − min) / mean`` over the window is below ``saturation``;
- the GSNR has **fallen**: the mean of the window's second half is below ``1 − gsnr_drop``
  times the mean of its first half.

After firing, a layer cannot fire again for ``cooldown`` readings. The forgetting itself
(perturbing or pruning the most rigid weights, :func:`rigid_weights`) is the policy's to
decide and the Scalpel's to do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["TOTAL", "FGSFSignal", "FGSFTrigger", "FisherHistory", "rigid_weights"]

TOTAL = "__total__"
"""Key of the whole network's series in a :class:`FisherHistory`."""


class FisherHistory:
    """Time series of the Fisher trace and mean GSNR of each layer and of the network.

    Args:
        maxlen: Readings kept per series (the oldest are dropped).
    """

    def __init__(self, maxlen: int = 256) -> None:
        if maxlen < 2:
            raise ValueError(f"Fisher history length must be at least 2, got {maxlen}")
        self.maxlen = maxlen
        self._trace: dict[str, list[float]] = {}
        self._gsnr: dict[str, list[float]] = {}

    def append(
        self,
        traces: Mapping[str, float],
        gsnr: Mapping[str, float],
        total_trace: float,
        total_gsnr: float,
    ) -> None:
        """Record one reading: per-layer traces and mean GSNRs, and the network's."""
        for series, values in ((self._trace, traces), (self._gsnr, gsnr)):
            for name, value in values.items():
                seq = series.setdefault(name, [])
                seq.append(float(value))
                del seq[: -self.maxlen]
        for series, value in ((self._trace, total_trace), (self._gsnr, total_gsnr)):
            seq = series.setdefault(TOTAL, [])
            seq.append(float(value))
            del seq[: -self.maxlen]

    def trace(self, name: str = TOTAL) -> Tensor:
        """The Fisher-trace series of a layer (or :data:`TOTAL`), oldest first."""
        return torch.tensor(self._trace.get(name, []), dtype=torch.float64)

    def gsnr(self, name: str = TOTAL) -> Tensor:
        """The mean-GSNR series of a layer (or :data:`TOTAL`), oldest first."""
        return torch.tensor(self._gsnr.get(name, []), dtype=torch.float64)

    def names(self) -> list[str]:
        """Series recorded, layers first, :data:`TOTAL` last."""
        return [n for n in self._trace if n != TOTAL] + ([TOTAL] if TOTAL in self._trace else [])

    def trend(self, name: str, window: int) -> tuple[float, float]:
        """Relative change of (trace, GSNR) over the last ``window`` readings (0 if fewer)."""
        out = []
        for seq in (self._trace.get(name, []), self._gsnr.get(name, [])):
            if len(seq) <= window:
                out.append(0.0)
            else:
                old = seq[-1 - window]
                out.append((seq[-1] - old) / (abs(old) + 1e-12))
        return out[0], out[1]

    def __len__(self) -> int:
        return len(self._trace.get(TOTAL, []))

    def state_dict(self) -> dict[str, Any]:
        """Every series, as lists of floats."""
        return {
            "maxlen": self.maxlen,
            "trace": {k: list(v) for k, v in self._trace.items()},
            "gsnr": {k: list(v) for k, v in self._gsnr.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.maxlen = int(state["maxlen"])
        self._trace = {k: list(v) for k, v in state["trace"].items()}
        self._gsnr = {k: list(v) for k, v in state["gsnr"].items()}


@dataclass(frozen=True)
class FGSFSignal:
    """The trigger's verdict at one reading.

    Attributes:
        fired: Whether the whole network shows premature rigidification.
        layers: Layers that individually show it (in the history's order).
    """

    fired: bool
    layers: tuple[str, ...]

    @property
    def any(self) -> bool:
        """Whether the network or any layer fired."""
        return self.fired or bool(self.layers)


class FGSFTrigger:
    """Fires on a risen-then-saturated Fisher trace with a falling GSNR (see the module doc).

    Args:
        window: Readings over which saturation and the GSNR fall are judged.
        saturation: Largest ``(max − min) / mean`` of the trace over the window that counts
            as saturated.
        min_rise: Relative rise of the trace, before the window, needed to call it risen.
        gsnr_drop: Relative fall of the mean GSNR across the window needed.
        cooldown: Readings after firing during which the same series cannot fire again.
    """

    def __init__(
        self,
        window: int = 5,
        saturation: float = 0.05,
        min_rise: float = 0.5,
        gsnr_drop: float = 0.2,
        cooldown: int = 10,
    ) -> None:
        if window < 2:
            raise ValueError(f"FGSF window must be at least 2 readings, got {window}")
        for name, value in (("saturation", saturation), ("min_rise", min_rise)):
            if value <= 0:
                raise ValueError(f"FGSF {name} must be positive, got {value}")
        if not 0 < gsnr_drop < 1:
            raise ValueError(f"FGSF gsnr_drop must be in (0, 1), got {gsnr_drop}")
        self.window = window
        self.saturation = saturation
        self.min_rise = min_rise
        self.gsnr_drop = gsnr_drop
        self.cooldown = cooldown
        self._quiet: dict[str, int] = {}

    def rigidified(self, trace: Tensor, gsnr: Tensor) -> bool:
        """Whether the latest reading of one series shows premature rigidification."""
        w = self.window
        if len(trace) < w + 2 or len(gsnr) < w + 1:
            return False
        recent, before = trace[-w - 1 :], trace[: -w - 1]
        risen = float(recent[0]) >= (1.0 + self.min_rise) * float(before.min())
        mean = float(recent.mean())
        flat = mean > 0 and float(recent.max() - recent.min()) / mean < self.saturation
        g = gsnr[-w - 1 :]
        half = math.ceil(len(g) / 2)
        falling = float(g[-half:].mean()) < (1.0 - self.gsnr_drop) * float(g[:half].mean())
        return risen and flat and falling

    def update(self, history: FisherHistory) -> FGSFSignal:
        """Judge the latest reading of every series in ``history`` (call once per reading)."""
        fired: list[str] = []
        for name in history.names():
            quiet = self._quiet.get(name, 0)
            if quiet > 0:
                self._quiet[name] = quiet - 1
                continue
            if self.rigidified(history.trace(name), history.gsnr(name)):
                fired.append(name)
                self._quiet[name] = self.cooldown
        return FGSFSignal(TOTAL in fired, tuple(n for n in fired if n != TOTAL))

    def state_dict(self) -> dict[str, Any]:
        """Remaining cooldown of each series."""
        return {"quiet": dict(self._quiet)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self._quiet = {k: int(v) for k, v in state["quiet"].items()}


def rigid_weights(fisher: Tensor, fraction: float, mask: Tensor | None = None) -> Tensor:
    """Flat indices of the ``fraction`` of active weights with the highest Fisher diagonal:
    the "high-rigidity" weights that FGSF perturbs or prunes, ascending, on ``fisher``'s
    device."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    flat = fisher.reshape(-1)
    if mask is None:
        candidates = torch.arange(flat.numel(), device=flat.device)
    else:
        candidates = mask.reshape(-1).to(flat.device).nonzero().view(-1)
    k = round(fraction * candidates.numel())
    top = torch.topk(flat[candidates], k).indices
    return candidates[top].sort().values
