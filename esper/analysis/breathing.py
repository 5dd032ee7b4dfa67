"""Breathing: does a surgeon spend density when its organism is surprised?

The seed's breathing strategy expands the active parameter count at novelty and prunes back in
consolidation. Under an elastic budget (:mod:`esper.policies.elastic`) that is measurable on
any run from what the surgeon itself could know: the organism's **surprise** at surgery ``t``
is the log-ratio of its online loss over the interval before the surgery to the interval
before that, ``log(L_t / L_{t−1})`` (a drift raises it, consolidation lowers it; the stream's
ground-truth novelty is never used), and the response is the global density the surgeon sets
at the next surgery. :func:`breathing_correlation` is their Pearson correlation over one run;
:func:`breathing_summary` averages it over runs with a BCa interval. A fixed budget gives no
value (its density never moves). Torch-free, like the rest of :mod:`esper.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from esper.analysis.intervals import bootstrap_interval

__all__ = ["breathing_correlation", "breathing_summary"]


def breathing_correlation(losses: Sequence[float], densities: Sequence[float]) -> float:
    """Pearson ``r`` between the surprise before each surgery and the density it set.

    Args:
        losses: Online loss of each interval in order: the reset's first, then one per surgery.
        densities: Global density after each surgery (``len(losses) − 1`` of them).

    Returns:
        ``r`` over the surgeries after the first; NaN when either side is constant or fewer
        than three pairs are finite.
    """
    loss = np.asarray(losses, dtype=float)
    held = np.asarray(densities, dtype=float)
    if loss.size != held.size + 1:
        raise ValueError(f"{loss.size} losses need {loss.size - 1} densities, got {held.size}")
    with np.errstate(divide="ignore", invalid="ignore"):
        surprise = np.log(loss[1:-1] / loss[:-2])  # before surgery t = 1 … n−1
    response = held[1:]  # the density surgery t set
    ok = np.isfinite(surprise) & np.isfinite(response)
    x, y = surprise[ok], response[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def breathing_summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, density), the mean breathing correlation over runs with its interval.

    Args:
        rows: ``{"policy", "density", "stream", "seed", "breathing"}`` per run; runs without a
            value (a fixed budget) are left out, and so are conditions with none.
    """
    groups: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        if math.isfinite(r.get("breathing", math.nan)):
            groups.setdefault((r["policy"], r["density"]), []).append(float(r["breathing"]))
    out = []
    for (policy, density), values in sorted(groups.items()):
        interval = bootstrap_interval(values)
        out.append({
            "policy": policy, "density": density, "runs": len(values),
            "mean_r": interval.mean, "ci": [interval.low, interval.high],
            "positive_runs": sum(v > 0 for v in values),
        })  # fmt: skip
    return out
