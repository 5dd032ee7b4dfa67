"""Where event-log parts live: ``RUN/<table>/trial=T/replica=R/part-NNNNNN.parquet``.

Hive-style partition directories (so ``trial`` and ``replica`` are also columns when the tables
are read as a dataset) holding numbered parts; readers glob only ``part-*.parquet``, never the
writers' temporary files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow.parquet as pq

__all__ = ["PART_GLOB", "next_part_number", "part_dir", "truncate_partition"]

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


def truncate_partition(directory: str | os.PathLike[str], keep: int) -> list[Path]:
    """Roll a partition back to its first ``keep`` parts: the state a checkpoint recorded.

    A replica restored from a checkpoint replays the surgeries after it, so the parts written
    after the checkpoint would hold those rows twice; they are removed, and so is the manifest
    of every writer that wrote any of them (the writer's remaining rows are a gap-free prefix
    of its sequence, which is what readers then check).

    Returns:
        The removed parts.
    """
    folder = Path(directory)
    doomed = sorted(
        path
        for path in folder.glob(PART_GLOB)
        if (match := _PART_RE.match(path.name)) and int(match.group(1)) >= keep
    )
    writers: set[str] = set()
    for path in doomed:
        table = pq.read_table(path, columns=["writer_id"])
        writers.update(str(w) for w in table.column("writer_id").unique().to_pylist())
    for path in doomed:
        path.unlink()
    for writer in writers:
        (folder / f"_writer-{writer}.json").unlink(missing_ok=True)
    return doomed
