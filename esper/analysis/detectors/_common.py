"""Helpers shared by the strategy detectors: replica grouping, validation, long-form indices."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

__all__: list[str] = []

_REPLICA_KEYS = ("run_id", "trial_id", "replica_id")
_PARTITION_KEYS = ("trial", "replica")


def _replica_keys(*frames: pd.DataFrame) -> list[str]:
    """Columns naming a replica that every non-empty frame has (ids first, hive partitions next)."""
    present = [f for f in frames if not f.empty] or list(frames)
    for candidates in (_REPLICA_KEYS, _PARTITION_KEYS):
        keys = [k for k in candidates if all(k in f.columns for f in present)]
        if keys:
            return keys
    return []


def _groups(
    df: pd.DataFrame, keys: Sequence[str]
) -> Iterator[tuple[tuple[object, ...], pd.DataFrame]]:
    """Yield ``(key_tuple, sub_frame)`` per replica; the whole frame when there are no keys."""
    if df.empty:
        return
    if not keys:
        yield (), df
        return
    for key, sub in df.groupby(list(keys), sort=True, dropna=False):
        yield (key if isinstance(key, tuple) else (key,)), sub


def _require(df: pd.DataFrame, columns: Sequence[str], table: str, detector: str) -> None:
    """Raise ``ValueError`` naming the missing columns of a non-empty table."""
    if df.empty:
        return
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{detector} detector needs column(s) {', '.join(missing)} in the {table} table"
        )


def _check(condition: bool, message: str) -> None:
    """Validate a detector parameter."""
    if not condition:
        raise ValueError(message)


def _empty(keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """An episode frame with no rows and the given columns."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in [*keys, *columns]})


def _long_indices(events: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Prune/regrow rows exploded to one row per touched weight.

    Returns a frame with ``keys``, ``layer``, ``surgery_step``, ``action`` and ``index``
    (``int64``), sorted by replica, layer, weight and step (prune before regrow at a tie).
    """
    cols = [*keys, "layer", "surgery_step", "action", "index"]
    if events.empty or "indices" not in events.columns:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    rows = events.loc[
        events["action"].isin(["prune", "regrow"]),
        [*keys, "layer", "surgery_step", "action", "indices"],
    ]
    rows = rows[rows["indices"].map(lambda v: v is not None and len(v) > 0)]
    if rows.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    long = rows.explode("indices").rename(columns={"indices": "index"})
    long["index"] = long["index"].astype(np.int64)
    long["surgery_step"] = long["surgery_step"].astype(np.int64)
    long["_order"] = (long["action"] == "regrow").astype(np.int8)
    long = long.sort_values([*keys, "layer", "index", "surgery_step", "_order"], kind="stable")
    return long.drop(columns="_order").reset_index(drop=True)


def _resized_sizes(events: pd.DataFrame) -> dict[str, int]:
    """Weights per layer, from the surgeries that resized it: the net count change of its
    prune/regrow rows (regrown − pruned) ÷ its density change, median over such surgeries.
    Layers never resized (pure swaps, untouched) are missing."""
    cols = {"surgery_step", "layer", "action", "count", "density_before", "density_after"}
    if events.empty or not cols <= set(events.columns):
        return {}
    rows = events[events["action"].isin(["prune", "regrow"]) & (events["layer"] != "")]
    rows = rows.dropna(subset=["density_before", "density_after"])
    if rows.empty:
        return {}
    signed = rows["count"].where(rows["action"] == "regrow", -rows["count"]).astype(float)
    moves = (
        signed.groupby(
            [rows["layer"], rows["surgery_step"], rows["density_before"], rows["density_after"]]
        )
        .sum()
        .reset_index(name="net")
    )
    moves["delta"] = moves["density_after"] - moves["density_before"]
    moves = moves[(moves["delta"].abs() > 0) & (moves["net"] != 0)]
    ratio = (moves["net"] / moves["delta"]).groupby(moves["layer"]).median()
    return {str(layer): max(round(float(v)), 1) for layer, v in ratio.items()}


def _sizes(events: pd.DataFrame, given: Mapping[str, int] | None) -> dict[str, int]:
    """``given`` layer sizes, completed by :func:`_resized_sizes`."""
    return {**_resized_sizes(events), **(dict(given) if given is not None else {})}
