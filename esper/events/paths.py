"""Where event-log parts live: ``RUN/<table>/trial=T/replica=R/part-NNNNNN.parquet``.

Hive-style partition directories (so ``trial`` and ``replica`` are also columns when the tables
are read as a dataset) holding numbered parts; readers glob only ``part-*.parquet``, never the
writers' temporary files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["PART_GLOB", "next_part_number", "part_dir"]

PART_GLOB = "part-*.parquet"
"""What readers glob: closed parts only."""

_PART_RE = re.compile(r"^part-(\d{6,})\.parquet$")


def part_dir(run_dir: str | os.PathLike[str], table: str, trial_id: str, replica_id: int) -> Path:
    """The directory holding the parts of one (table, trial, replica)."""
    return Path(run_dir) / table / f"trial={trial_id}" / f"replica={replica_id}"


def next_part_number(directory: Path) -> int:
    """One past the highest ``part-NNNNNN.parquet`` number in ``directory`` (0 if none)."""
    highest = -1
    if directory.is_dir():
        for entry in os.scandir(directory):
            match = _PART_RE.match(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest + 1
