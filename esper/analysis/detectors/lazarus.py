"""Lazarus tunnelling: heat the topology, lose accuracy, come back better than before.

The seed's "Lazarus" strategy is topological simulated annealing: Emrakul raises the Gumbel
temperature τ and churns connections (prunes critical paths, regrows them elsewhere), accepting
a short accuracy loss to leave a poor basin, then cools down into a better one.

Criterion, per replica:

1. **Burst**: a surgery step where the surgeon heated the topology. Since schema 3 every event
   row carries the surgeon's own decision: its heat bit (``heat``) and selection temperature
   (``policy_tau``); a step is a burst when any of its rows has ``heat`` true or a
   ``policy_tau`` above ``tau_factor`` × the replica's median. Logs without those decisions
   (older logs, surgeons without a temperature) fall back to the Scalpel's temperature events
   (``tau`` of ``temperature`` rows). Turnover alone is not heat: a top-decile turnover finds
   "bursts" in almost any run (RigL's scheduled swaps included), so it counts only when asked
   for (``turnover_quantile``). Burst steps closer than ``merge_gap`` are one burst, dated by
   its first step; ``burst_by`` says which signal found it.
2. **Pre level**: mean ``online_accuracy`` over the ``pre_window`` metric rows before the burst.
3. **Drop**: the minimum accuracy in ``(burst, burst + window]`` (the trough) is at least
   ``min_drop`` below the pre level.
4. **Recovery**: the first step after the trough, within the window, whose accuracy exceeds the
   pre level; the recovered level is the mean accuracy over ``pre_window`` rows from there.
   The episode counts when ``net_gain = recovered − pre > min_gain``.
5. **No drift confound** (unless ``allow_drift``): the metrics' ``task_index`` does not change
   between the first pre-burst row and the trough, so the drop is not the stream's doing.

A burst followed by recovery to (or below) the old level is ordinary drift damage, not
tunnelling, and is not reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from esper.analysis.detectors._common import _check, _empty, _groups, _replica_keys, _require

__all__ = ["heat_bursts", "lazarus"]

_COLUMNS = [
    "burst_step",
    "burst_end_step",
    "burst_tau",
    "burst_turnover",
    "burst_by",
    "pre_level",
    "trough_step",
    "trough",
    "recovery_step",
    "recovered_level",
    "steps_to_recover",
    "net_gain",
]


def _decided(ev: pd.DataFrame) -> bool:
    """Whether the log carries the surgeon's heat decisions (schema ≥ 3, a surgeon with heat)."""
    return "heat" in ev.columns and bool(ev["heat"].notna().any())


def _bursts(ev: pd.DataFrame, tau_factor: float, turnover_quantile: float | None) -> pd.DataFrame:
    """Per-step τ, turnover and heat with a ``burst`` flag and the signal behind it (``by``)."""
    churn = ev[ev["action"].isin(["prune", "regrow"])].groupby("surgery_step")["count"].sum()
    by_step = ev.groupby("surgery_step")
    if _decided(ev):
        heat = by_step["heat"].agg(lambda h: bool(h.fillna(False).astype(bool).any()))
        tau = by_step["policy_tau"].max() if "policy_tau" in ev.columns else None
        source = "policy_tau"
    else:
        heat = pd.Series(dtype=bool)
        temp = ev[ev["action"] == "temperature"]
        tau = temp.groupby("surgery_step")["tau"].max() if "tau" in ev.columns else None
        source = "tau"
    steps = pd.DataFrame(
        {"tau": tau if tau is not None else pd.Series(dtype=float), "turnover": churn,
         "heat": heat}
    ).sort_index()  # fmt: skip
    steps["turnover"] = steps["turnover"].fillna(0.0)
    steps["heat"] = steps["heat"].fillna(False).astype(bool)
    steps["by"] = np.where(steps["heat"], "heat", "")
    taus = steps["tau"].dropna()
    if len(taus) > 0 and (median := float(np.median(taus))) > 0:
        hot = steps["tau"].gt(tau_factor * median).fillna(False) & (steps["by"] == "")
        steps.loc[hot, "by"] = source
    if turnover_quantile is not None and (steps["turnover"] > 0).any():
        threshold = float(np.quantile(steps["turnover"], turnover_quantile))
        churned = (steps["turnover"] > threshold) & (steps["by"] == "")
        steps.loc[churned, "by"] = "turnover"
    steps["burst"] = steps["by"] != ""
    return steps


def heat_bursts(events: pd.DataFrame, merge_gap: int = 2) -> list[int]:
    """The surgery steps at which one run's heat bursts start: steps whose rows carry the
    surgeon's heat bit (not a τ spike alone), steps at most ``merge_gap`` apart joined as in
    :func:`lazarus`, whether or not a tunnelling episode follows: what "does heat help?"
    compares with matched quiet windows
    (:func:`esper.analysis.strategy_effects.episode_effects`)."""
    _require(events, ["surgery_step", "action", "count"], "events", "heat_bursts")
    steps = _bursts(events, 3.0, None)  # the τ criterion aside: only "heat" rows are kept
    burst_steps = steps.index[steps["by"] == "heat"].to_numpy()
    starts = np.r_[True, np.diff(burst_steps) > merge_gap] if len(burst_steps) else []
    return [int(b) for b, first in zip(burst_steps, starts, strict=True) if first]


def lazarus(
    events: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    tau_factor: float = 3.0,
    turnover_quantile: float | None = None,
    window: int = 20,
    pre_window: int = 5,
    min_drop: float = 0.02,
    min_gain: float = 0.0,
    merge_gap: int = 2,
    allow_drift: bool = False,
) -> pd.DataFrame:
    """Detect Lazarus tunnelling episodes (burst → accuracy drop → recovery above the old level).

    Args:
        events: The ``events`` table (``surgery_step``, ``action``, ``count``; ``heat`` and
            ``policy_tau``, or ``tau``).
        metrics: The ``metrics`` table (``surgery_step``, ``online_accuracy``).
        tau_factor: τ above this multiple of the replica's median τ is a heat burst (> 1;
            Emrakul's heat multiplies τ by 10 by default).
        turnover_quantile: Also count prune+regrow turnover strictly above this quantile as a
            burst (``None``, the default: heat only; the criterion before schema 3 used 0.9).
        window: Surgery steps after the burst in which the drop and recovery must happen.
        pre_window: Metric rows averaged for the pre-burst and recovered levels.
        min_drop: Least accuracy drop below the pre level that counts as a drop.
        min_gain: Net gain the recovery must exceed.
        merge_gap: Burst steps at most this far apart are one burst.
        allow_drift: Keep episodes whose drop coincides with a task change.

    Returns:
        One row per episode: replica keys and the columns ``burst_step``, ``burst_end_step``,
        ``burst_tau``, ``burst_turnover``, ``burst_by``, ``pre_level``, ``trough_step``, ``trough``,
        ``recovery_step``, ``recovered_level``, ``steps_to_recover`` and ``net_gain``.
    """
    _check(tau_factor > 1.0, f"lazarus: tau_factor must be > 1, got {tau_factor}")
    _check(
        turnover_quantile is None or 0.0 < turnover_quantile < 1.0,
        "lazarus: turnover_quantile must be in (0, 1) or None",
    )
    _check(window >= 1 and pre_window >= 1, "lazarus: window and pre_window must be >= 1")
    _check(min_drop >= 0 and merge_gap >= 0, "lazarus: min_drop and merge_gap must be >= 0")
    _require(events, ["surgery_step", "action", "count"], "events", "lazarus")
    _require(metrics, ["surgery_step", "online_accuracy"], "metrics", "lazarus")
    keys = _replica_keys(events, metrics)
    out: list[dict[str, object]] = []
    metric_groups = dict(_groups(metrics, keys))
    for key, ev in _groups(events, keys):
        mt = metric_groups.get(key)
        if mt is None:
            continue
        acc = mt.groupby("surgery_step")["online_accuracy"].mean().sort_index().dropna()
        steps = _bursts(ev, tau_factor, turnover_quantile)
        burst_steps = steps.index[steps["burst"]].to_numpy()
        if len(burst_steps) == 0 or acc.empty:
            continue
        starts = np.r_[True, np.diff(burst_steps) > merge_gap]
        group_id = np.cumsum(starts)
        acc_steps, acc_vals = acc.index.to_numpy(), acc.to_numpy(dtype=float)
        task = None
        if not allow_drift and "task_index" in mt.columns:
            task = mt.groupby("surgery_step")["task_index"].first().reindex(acc.index).to_numpy()
        for gid in np.unique(group_id):
            members = burst_steps[group_id == gid]
            start, end = int(members[0]), int(members[-1])
            before = acc_vals[acc_steps < start][-pre_window:]
            if len(before) == 0:
                continue
            pre = float(before.mean())
            in_win = (acc_steps > start) & (acc_steps <= start + window)
            if not in_win.any():
                continue
            win_steps, win_vals = acc_steps[in_win], acc_vals[in_win]
            t = int(np.argmin(win_vals))
            trough = float(win_vals[t])
            if pre - trough < min_drop:
                continue
            if task is not None:
                span = task[
                    (acc_steps >= acc_steps[acc_steps < start][-pre_window:][0])
                    & (acc_steps <= win_steps[t])
                ]
                if len(pd.unique(span)) > 1:
                    continue
            later = np.nonzero(win_vals[t + 1 :] > pre)[0]
            if len(later) == 0:
                continue
            r = t + 1 + int(later[0])
            recovery_step = int(win_steps[r])
            recovered = float(acc_vals[acc_steps >= recovery_step][:pre_window].mean())
            gain = recovered - pre
            if gain <= min_gain:
                continue
            burst = steps.loc[members]
            out.append(
                {
                    **dict(zip(keys, key, strict=True)),
                    "burst_step": start,
                    "burst_end_step": end,
                    "burst_tau": float(burst["tau"].max()),
                    "burst_turnover": float(burst["turnover"].sum()),
                    "burst_by": ",".join(sorted(set(burst["by"]))),
                    "pre_level": pre,
                    "trough_step": int(win_steps[t]),
                    "trough": trough,
                    "recovery_step": recovery_step,
                    "recovered_level": recovered,
                    "steps_to_recover": recovery_step - start,
                    "net_gain": gain,
                }
            )
    return pd.DataFrame(out) if out else _empty(keys, _COLUMNS)
