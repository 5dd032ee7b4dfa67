"""Learning curves: one row per learner iteration of each population member.

A member's iteration metrics (fitness, reward terms, density, policy version) go to MLflow,
but a run directory should be readable on its own: ``RUN/learning/<trial>.jsonl`` holds one
JSON object per iteration, written atomically, so a notebook or ``esper report`` can plot how
the policy learned without an MLflow server. A member restored to an earlier iteration (a
crash, ``--resume``) drops the rows after it before writing, as the event log does, so the
curve has each iteration once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from esper.files import atomic_write_text

__all__ = ["LEARNING_DIR", "read_learning_curves", "record_iteration"]

LEARNING_DIR = "learning"
"""Folder of the learning curves inside a run directory."""


_SKIP = object()


def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return _SKIP  # anything else is not a curve value


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not a JSON object: {err}") from err
        if not isinstance(row, dict) or "iteration" not in row:
            raise ValueError(f"{path}:{number} has no 'iteration'")
        rows.append(row)
    return rows


def record_iteration(
    run_dir: str | os.PathLike[str], trial: str, metrics: Mapping[str, Any]
) -> Path:
    """Add iteration ``metrics["iteration"]`` of member ``trial`` to its curve, dropping any
    rows from that iteration on (a restored member repeats them). Values that are not plain
    numbers, strings or booleans are left out; NaN is written as ``null``.

    Raises:
        KeyError: ``metrics`` has no ``iteration``.
    """
    iteration = int(metrics["iteration"])
    path = Path(run_dir) / LEARNING_DIR / f"{trial}.jsonl"
    rows = [r for r in _rows(path) if int(r["iteration"]) < iteration]
    values = {k: _plain(v) for k, v in metrics.items()}
    rows.append({"trial": trial, **{k: v for k, v in values.items() if v is not _SKIP}})
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    return atomic_write_text(path, text)


def read_learning_curves(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every member's rows, by trial then iteration (empty when the run recorded none).

    Raises:
        ValueError: a damaged curve file (the file and line are named).
    """
    folder = Path(run_dir) / LEARNING_DIR
    rows = [row for path in sorted(folder.glob("*.jsonl")) for row in _rows(path)]
    return sorted(rows, key=lambda r: (str(r.get("trial")), int(r["iteration"])))
