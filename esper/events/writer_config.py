"""Where and when one :class:`~esper.events.writer.EventWriter` writes: a picklable config, so
that a replica actor can build its own writer from it."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from esper.events.schema import TABLES

__all__ = ["EventWriterConfig"]

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class EventWriterConfig:
    """Picklable configuration of one :class:`EventWriter`.

    Attributes:
        run_dir: The run directory (``RUN``); created if missing.
        trial_id: Trial (population member); letters, digits, ``_``, ``.``, ``-`` only.
        replica_id: Replica within the trial (``>= 0``).
        table: ``events`` or ``metrics``.
        flush_rows: Flush a part once this many rows are buffered (``>= 1``).
        flush_seconds: Flush a part once this many seconds passed since the last flush
            (checked on each write; ``> 0``).
        durable: ``fsync`` each part and manifest (and its directory) before and after the
            rename, so they also survive a power loss, not only a process crash. Off by
            default (slower).
    """

    run_dir: str
    trial_id: str
    replica_id: int
    table: str = "events"
    flush_rows: int = 16384
    flush_seconds: float = 5.0
    durable: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.run_dir, str | os.PathLike) or not str(self.run_dir):
            raise ValueError(f"run_dir must be a non-empty path, got {self.run_dir!r}")
        if (
            not isinstance(self.trial_id, str)
            or not _SAFE_ID.match(self.trial_id)
            or self.trial_id in (".", "..")
        ):
            raise ValueError(
                f"trial_id must be a non-empty string of letters, digits, '_', '.', '-' "
                f"(it names a directory), got {self.trial_id!r}"
            )
        if isinstance(self.replica_id, bool) or not isinstance(self.replica_id, int):
            raise ValueError(f"replica_id must be an int >= 0, got {self.replica_id!r}")
        if self.replica_id < 0:
            raise ValueError(f"replica_id must be an int >= 0, got {self.replica_id!r}")
        if self.table not in TABLES:
            raise ValueError(f"unknown table {self.table!r}; valid tables: {', '.join(TABLES)}")
        if isinstance(self.flush_rows, bool) or not isinstance(self.flush_rows, int):
            raise ValueError(f"flush_rows must be an int >= 1, got {self.flush_rows!r}")
        if self.flush_rows < 1:
            raise ValueError(f"flush_rows must be an int >= 1, got {self.flush_rows!r}")
        if not isinstance(self.flush_seconds, int | float) or not (
            math.isfinite(self.flush_seconds) and self.flush_seconds > 0
        ):
            raise ValueError(
                f"flush_seconds must be a finite number > 0, got {self.flush_seconds!r}"
            )
