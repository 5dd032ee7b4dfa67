"""Breathing: a periodic active-parameter count that inhales with novelty, exhales after.

The seed's Adaptive Temporal Masking picture: modules fade in and out with the stream, so the
active parameter count rises while the data is novel (inhale) and falls back to an efficient
core during consolidation (exhale), a rhythm rather than flicker.

Criterion, per replica: the active-parameter series (metrics ``active_params`` by
``surgery_step``; when absent, the sum over layers of the last known ``density_after`` in
the events) is linearly detrended; its spectral peak (largest periodogram bin, excluding the
zero frequency) gives the ``period`` and ``strength`` (peak power ÷ total power), and the
autocorrelation at the rounded period lag gives ``acf``, and ``inhale`` is the rises' share of
the series' total movement (sum of its positive steps ÷ sum of its absolute steps). The replica
breathes when ``strength >= min_strength``, ``acf >= min_acf``, the series holds at least
``min_cycles`` periods and ``inhale >= min_inhale``. Coupling to ground-truth ``novelty`` is
reported as Pearson and Spearman r and p (``novelty_coupled`` when Pearson r > 0 with
p < ``alpha``).

Why ``inhale``: breathing goes up and comes down. A pruning schedule that removes weights every
few surgeries (GMP's staircase towards its final density) is periodic once detrended, and on a
real run it passed the spectral tests (strength 0.49, acf 0.57) without a single rise; a
series whose rises are under a quarter of its movement is a schedule, not a breath. RigL and
static sparse runs hold a constant count and are examined but never breathe
(``tests/analysis/test_detectors_real.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import signal, stats

from esper.analysis.detectors._common import _check, _empty, _groups, _replica_keys, _require

__all__ = ["breathing"]

_COLUMNS = [
    "source",
    "n_steps",
    "period",
    "strength",
    "acf",
    "mean_active",
    "amplitude",
    "inhale",
    "pearson_r",
    "pearson_p",
    "spearman_r",
    "spearman_p",
    "novelty_coupled",
    "detected",
]


def _series_from_events(ev: pd.DataFrame) -> pd.Series:
    """Sum over layers of each layer's last known ``density_after``, per surgery step."""
    rows = ev.dropna(subset=["density_after"])
    rows = rows[rows["layer"] != ""]
    if rows.empty:
        return pd.Series(dtype=float)
    last = (
        rows.sort_values("surgery_step").groupby(["surgery_step", "layer"])["density_after"].last()
    )
    return last.unstack("layer").sort_index().ffill().sum(axis=1, min_count=1).dropna()


def _acf(x: np.ndarray, lag: int) -> float:
    """Autocorrelation of a centred series at one lag."""
    denom = float(np.dot(x, x))
    if denom == 0 or lag >= len(x):
        return float("nan")
    return float(np.dot(x[:-lag], x[lag:]) / denom)


def _spectrum(active: pd.Series) -> dict[str, float]:
    """``period``, ``strength``, ``acf``, ``amplitude``, ``inhale`` and ``cycles`` (the
    spectral peak's bin) of a series; ``nan`` (0 cycles) where it does not move."""
    nan = float("nan")
    steps = np.diff(active.to_numpy())
    moved = float(np.abs(steps).sum())
    out = {"period": nan, "strength": nan, "acf": nan, "amplitude": 0.0, "inhale": nan}
    out["cycles"] = 0.0
    if moved == 0:
        return out
    out["inhale"] = float(steps[steps > 0].sum()) / moved
    x = signal.detrend(active.to_numpy())
    out["amplitude"] = float(x.max() - x.min())
    power = np.abs(np.fft.rfft(x)) ** 2
    total = float(power[1:].sum())
    if total <= 0:
        return out
    k = 1 + int(np.argmax(power[1:]))
    out.update(cycles=float(k), period=len(x) / k, strength=float(power[k] / total))
    out["acf"] = _acf(x, max(1, round(len(x) / k)))
    return out


def _correlations(
    active: pd.Series, novelty: pd.Series | None
) -> tuple[float, float, float, float]:
    nan = float("nan")
    if novelty is None:
        return nan, nan, nan, nan
    both = pd.concat([active.rename("a"), novelty.rename("n")], axis=1).dropna()
    if len(both) < 3 or both["a"].nunique() < 2 or both["n"].nunique() < 2:
        return nan, nan, nan, nan
    pr = stats.pearsonr(both["a"], both["n"])
    sr = stats.spearmanr(both["a"], both["n"])
    return float(pr[0]), float(pr[1]), float(sr[0]), float(sr[1])


def breathing(
    events: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    min_strength: float = 0.2,
    min_acf: float = 0.3,
    min_cycles: float = 2.0,
    min_steps: int = 8,
    min_inhale: float = 0.25,
    alpha: float = 0.05,
    keep_rejected: bool = False,
) -> pd.DataFrame:
    """Detect breathing replicas: periodic active-parameter counts and their novelty coupling.

    Args:
        events: The ``events`` table (used only when metrics lack ``active_params``).
        metrics: The ``metrics`` table (``surgery_step``, ``active_params``, ``novelty``).
        min_strength: Least share of the detrended variance in the spectral peak, in (0, 1].
        min_acf: Least autocorrelation at the period lag, in (-1, 1].
        min_cycles: Least number of whole periods the series must span (>= 1).
        min_steps: Shortest series examined.
        min_inhale: Least share of the series' movement that is upward, in [0, 0.5].
        alpha: Significance level of the novelty correlation.
        keep_rejected: Also return the replicas examined (at least ``min_steps`` surgery
            steps) that fail the criterion: the denominator of a false-positive rate.

    Returns:
        One row per breathing replica: replica keys, ``source`` (``active_params`` or
        ``density``), ``n_steps``, ``period`` (surgery steps), ``strength``, ``acf``,
        ``mean_active``, ``amplitude`` (peak-to-trough of the detrended series), ``inhale``,
        ``pearson_r``/``pearson_p``, ``spearman_r``/``spearman_p`` against ``novelty``,
        ``novelty_coupled`` and ``detected`` (false only on the rows ``keep_rejected`` adds;
        a constant series has no period, strength or acf).
    """
    _check(0.0 < min_strength <= 1.0, "breathing: min_strength must be in (0, 1]")
    _check(-1.0 < min_acf <= 1.0, "breathing: min_acf must be in (-1, 1]")
    _check(min_cycles >= 1.0, "breathing: min_cycles must be >= 1")
    _check(min_steps >= 4, "breathing: min_steps must be >= 4")
    _check(0.0 <= min_inhale <= 0.5, "breathing: min_inhale must be in [0, 0.5]")
    _check(0.0 < alpha < 1.0, "breathing: alpha must be in (0, 1)")
    _require(metrics, ["surgery_step"], "metrics", "breathing")
    use_metrics = not metrics.empty and "active_params" in metrics.columns
    use_metrics = use_metrics and bool(metrics["active_params"].notna().any())
    if not use_metrics:
        _require(events, ["surgery_step", "layer", "density_after"], "events", "breathing")
    keys = _replica_keys(metrics) if use_metrics else _replica_keys(events, metrics)
    metric_groups = dict(_groups(metrics, keys))
    source_groups = _groups(metrics, keys) if use_metrics else _groups(events, keys)
    out: list[dict[str, object]] = []
    for key, frame in source_groups:
        if use_metrics:
            active = frame.groupby("surgery_step")["active_params"].mean().sort_index().dropna()
        else:
            active = _series_from_events(frame)
        active = active.astype(float)
        if len(active) < min_steps:
            continue
        spectrum = _spectrum(active)
        detected = bool(  # a constant series has nan measures and 0 cycles: not detected
            spectrum["cycles"] >= min_cycles
            and spectrum["strength"] >= min_strength
            and spectrum["acf"] >= min_acf
            and spectrum["inhale"] >= min_inhale
        )
        if not (detected or keep_rejected):
            continue
        mt = metric_groups.get(key)
        novelty = None
        if mt is not None and "novelty" in mt.columns:
            novelty = mt.groupby("surgery_step")["novelty"].mean()
        pr, pp, sr, sp = _correlations(active, novelty)
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "source": "active_params" if use_metrics else "density",
                "n_steps": len(active),
                **{k: v for k, v in spectrum.items() if k != "cycles"},
                "mean_active": float(active.mean()),
                "pearson_r": pr,
                "pearson_p": pp,
                "spearman_r": sr,
                "spearman_p": sp,
                "novelty_coupled": bool(pr > 0 and pp < alpha),
                "detected": detected,
            }
        )
    return pd.DataFrame(out)[[*keys, *_COLUMNS]] if out else _empty(keys, _COLUMNS)
